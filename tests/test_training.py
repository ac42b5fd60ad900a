import json
import os
import re
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import app, flags
from helpers import REPO_ROOT, fake_mnist_dir

from vqvae_tf import cli, get_config
from vqvae_tf.data import DataSource
from vqvae_tf.training import loop, train_vqvae_lib
from vqvae_tf.training.options import RunOptions
from vqvae_tf.utils import files

METRIC_KEYS = (
    "test_mse",
    "test_normalized_mse",
    "test_psnr",
    "perplexity",
    "codebook_usage",
    "bits_per_dim_reconstruction",
    "steps",
    "images_per_second",
)


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("idx"))
    fake_mnist_dir(root, n_train=64, n_test=24)
    return root


def tiny(steps=6, **overrides):
    config = get_config("tiny")
    config.steps = steps
    config.batch_size = 8
    for k, v in overrides.items():
        setattr(config, k, v)
    return config


def run(config, workdir, data_dir, **kw):
    kw.setdefault("log_every", 3)
    kw.setdefault("checkpoint_every", 3)
    return train_vqvae_lib.train_and_evaluate(
        config, RunOptions(workdir=str(workdir), data=DataSource(kw.pop("dataset", None), data_dir), **kw)
    )


def test_train_writes_metrics_and_resumes(tmp_path, small_data, capsys):
    metrics = run(tiny(steps=6), tmp_path, small_data)
    assert metrics["steps"] == 6 and metrics["test_examples"] == 24
    for key in METRIC_KEYS:
        assert key in metrics
    # (The figures themselves are checked against NumPy in test_evaluate_matches_numpy_on_a_known_batch.)
    saved = json.load(open(tmp_path / "vqvae" / "metrics.json"))
    assert saved["steps"] == 6
    ckpts = sorted(os.listdir(tmp_path / "vqvae" / "checkpoints"))
    assert "ckpt-6.index" in ckpts and "ckpt-3.index" in ckpts

    capsys.readouterr()
    metrics = run(tiny(steps=9), tmp_path, small_data)
    out = capsys.readouterr().out
    assert "Resumed from step 6" in out
    assert "step 9/9" in out and "step 3/9" not in out
    assert metrics["steps"] == 9

    model = train_vqvae_lib.load_trained_model(str(tmp_path))
    assert int(model.optimizer.iterations.numpy()) == 9


def test_optimizer_state_survives_resume(tmp_path, small_data):
    run(tiny(steps=3), tmp_path, small_data)
    model = train_vqvae_lib.load_trained_model(str(tmp_path))
    moments = [v.numpy() for v in model.optimizer.variables if "momentum" in v.path]
    assert moments and any(np.abs(m).sum() > 0 for m in moments)


def test_workdir_with_other_config_is_refused(tmp_path, small_data):
    run(tiny(steps=3), tmp_path, small_data)
    with pytest.raises(files.WorkdirError, match="num_embeddings: saved 16 vs now 32"):
        run(tiny(steps=3, num_embeddings=32), tmp_path, small_data)


def test_workdir_from_before_a_config_field_resumes(tmp_path, small_data):
    """A run made before the quantizer-zoo fields existed (format version 1: its config.json lacks
    them and a format_version) resumes; another quantizer is still refused; a version-2 record
    that lacks a field is no old record and is refused."""
    run(tiny(steps=3), tmp_path, small_data)
    path = os.path.join(str(tmp_path), "vqvae", "config.json")
    record = json.load(open(path))
    assert record["format_version"] == files.FORMAT_VERSION == 2
    del record["config"]["distance"]
    json.dump(record, open(path, "w"))
    with pytest.raises(files.WorkdirError, match="distance: saved '\\(missing\\)' vs now 'euclidean'"):
        run(tiny(steps=4), tmp_path, small_data)
    del record["format_version"]
    for field in ("fsq_levels", "num_quantizers"):
        del record["config"][field]
    json.dump(record, open(path, "w"))
    run(tiny(steps=4), tmp_path, small_data)
    assert int(train_vqvae_lib.load_trained_model(str(tmp_path)).optimizer.iterations.numpy()) == 4
    with pytest.raises(files.WorkdirError, match="quantizer: saved 'ema' vs now 'fsq'"):
        run(tiny(steps=5, quantizer="fsq", fsq_levels=(4, 4)), tmp_path, small_data)


def test_bad_arguments(tmp_path, small_data, mirrored):
    with pytest.raises(ValueError, match="steps must be a positive integer, got 0"):
        run(tiny(steps=0), tmp_path, small_data)
    with pytest.raises(ValueError, match="batch_size 7 is not divisible by the 2 replicas"):
        run(tiny(batch_size=7), tmp_path, small_data, strategy=mirrored)
    # The image shape comes from the data; a size the config's downsampling cannot divide is refused.
    with pytest.raises(ValueError, match=r"are 28x28, which config 'vqvae_256' \(downsample=8\) cannot divide"):
        run(get_config("vqvae_256"), tmp_path, small_data, dataset="fashion_mnist")
    afile = tmp_path / "a_file"
    afile.write_text("x")
    with pytest.raises(files.WorkdirError, match="not writable"):
        run(tiny(), afile / "sub", small_data)
    with pytest.raises(ValueError, match="Unknown strategy 'tpu'"):
        run(tiny(), tmp_path, small_data, strategy="tpu")
    with pytest.raises(ValueError, match="log_every must be a positive integer, got 0"):
        run(tiny(), tmp_path, small_data, log_every=0)


def test_jit_compile_auto_times_both_and_trains_every_step(tmp_path, small_data, capsys, monkeypatch):
    monkeypatch.setattr(loop, "JIT_PROBE_STEPS", 2)
    monkeypatch.setattr(loop, "JIT_PROBE_ROUNDS", 1)
    monkeypatch.setattr(loop, "JIT_PROBE_MIN_STEPS", 10)
    metrics = run(tiny(steps=12, jit_compile="auto"), tmp_path, small_data, log_every=6, checkpoint_every=6)
    out = capsys.readouterr().out
    # 1 compiling step each way, then 2 timed steps each way, all of them training steps.
    probe = re.search(r"jit_compile=auto: (\d+) ex/s with XLA, (\d+) without .* -> training (with|without) XLA", out)
    assert probe, out
    assert (probe[3] == "with") == (int(probe[1]) > int(probe[2]))
    assert "step 12/12" in out and metrics["steps"] == 12
    # A run too short to pay for XLA's compilation trains without it, untimed.
    run(tiny(steps=15, jit_compile="auto"), tmp_path, small_data)
    assert "no XLA probe for 3 step(s) on 1 replica(s); training without XLA" in capsys.readouterr().out
    with pytest.raises(ValueError, match="jit_compile must be true, false or 'auto', got 'sometimes'"):
        run(tiny(jit_compile="sometimes"), tmp_path / "other", small_data)


def test_jit_compile_flag_takes_a_bool_or_auto_and_writes_it_back():
    for argv, value, text in [
        ([], None, ""),
        (["--jit_compile"], True, "--jit_compile"),
        (["--nojit_compile"], False, "--nojit_compile"),
        (["--jit_compile=auto"], "auto", "--jit_compile=auto"),
        (["--jit_compile=false"], False, "--nojit_compile"),
    ]:
        values = flags.FlagValues()
        holder = cli.define_jit_compile_flag(values)
        values(["prog", *argv])
        assert holder.value == value
        assert values["jit_compile"].serialize() == text
        again = flags.FlagValues()  # flags.txt read back gives the same value
        again_holder = cli.define_jit_compile_flag(again)
        again(["prog", *([text] if text else [])])
        assert again_holder.value == value
    with pytest.raises(flags.IllegalFlagValueError, match="expected true, false or auto, got 'maybe'"):
        values = flags.FlagValues()
        cli.define_jit_compile_flag(values)
        values(["prog", "--jit_compile=maybe"])


def test_workdir_lock(tmp_path):
    with files.WorkdirLock(str(tmp_path)):
        with pytest.raises(files.WorkdirError, match=rf"in use by another process \(pid {os.getpid()}\)"):
            files.WorkdirLock(str(tmp_path)).acquire()
    files.WorkdirLock(str(tmp_path)).acquire().release()  # released on exit


def test_mirrored_training(tmp_path, small_data, mirrored):
    metrics = run(tiny(steps=4), tmp_path, small_data, strategy=mirrored)
    assert metrics["steps"] == 4 and np.isfinite(metrics["test_mse"])


# ---------------------------------------------------------------- the script


def _script(args, env=None, timeout=300):
    env = dict(os.environ, **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "train.train_vqvae", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_script_rejects_bad_flags(scripts, tmp_path):
    res = scripts.run("train.train_vqvae", f"--workdir={tmp_path}", "--steps=0")
    assert res.returncode != 0 and "flag --steps=0: 0 is not a positive integer" in res.stderr
    res = scripts.run("train.train_vqvae", f"--workdir={tmp_path}", "--config=nope")
    assert res.returncode != 0 and "nope" in res.stderr and "fashion_mnist" in res.stderr
    res = scripts.run("train.train_vqvae", "--config=tiny")
    assert res.returncode != 0 and "workdir" in res.stderr


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.mark.slow
def test_multi_worker_two_local_processes(tmp_path, small_data):
    ports = _free_ports(2)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    procs = []
    for i in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}))
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "train.train_vqvae",
                    f"--workdir={tmp_path}",
                    "--config=tiny",
                    "--strategy=multi_worker",
                    f"--data_dir={small_data}",
                    "--steps=4",
                    "--batch_size=8",
                    "--log_every=2",
                    "--checkpoint_every=2",
                ],
                cwd=REPO_ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    try:
        outs = [p.communicate(timeout=240) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert "2 replica(s)" in outs[0][0]
    metrics = json.load(open(tmp_path / "vqvae" / "metrics.json"))
    assert metrics["steps"] == 4
    assert "ckpt-4.index" in os.listdir(tmp_path / "vqvae" / "checkpoints")


def _np_discretized_gaussian_log_prob(x_pixels, mean_pixels, std):
    """log P(pixel = x) for a Gaussian(mean, std) binned on the integers 0..255, tails in the ends."""
    from math import erf, sqrt

    cdf = np.vectorize(lambda t: 0.5 * (1.0 + erf(t / sqrt(2.0))))
    upper = np.where(x_pixels >= 255, 1.0, cdf((x_pixels + 0.5 - mean_pixels) / std))
    lower = np.where(x_pixels <= 0, 0.0, cdf((x_pixels - 0.5 - mean_pixels) / std))
    return np.log(np.maximum(upper - lower, 1e-300))


def test_evaluate_matches_numpy_on_a_known_batch(monkeypatch):
    keras.utils.set_random_seed(1)
    model = get_config("tiny").build(data_variance=0.05)
    rng = np.random.default_rng(0)
    test_x = rng.uniform(size=(12, 28, 28, 1)).astype(np.float32)
    fit_x = np.clip(test_x[:6] + 0.2, 0, 1).astype(np.float32)  # a different fit set
    as_ds = lambda x: tf.data.Dataset.from_tensor_slices((x, np.zeros(len(x), np.int32))).batch(5)  # noqa: E731
    metrics = train_vqvae_lib.evaluate(model, as_ds(test_x), as_ds(fit_x))

    mean = model.forward(test_x)["mean"].numpy().astype(np.float64)
    recon = np.clip(mean, 0, 1)
    per_image = ((recon - test_x) ** 2).mean(axis=(1, 2, 3))
    assert metrics["test_mse"] == pytest.approx(per_image.mean(), rel=1e-5)
    assert metrics["test_normalized_mse"] == pytest.approx(per_image.mean() / 0.05, rel=1e-5)
    assert metrics["test_psnr"] == pytest.approx(np.mean(10 * np.log10(1 / per_image)), rel=1e-5)
    counts = np.bincount(model.encode(test_x).numpy().ravel(), minlength=model.num_embeddings)
    p = counts[counts > 0] / counts.sum()
    assert metrics["perplexity"] == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-5)
    assert metrics["codebook_usage"] == pytest.approx((counts > 0).mean())
    # SSIM per image (tf.image.ssim on [0, 1]); LPIPS-VGG on the first LPIPS_EXAMPLES images only.
    ssim = tf.image.ssim(tf.constant(test_x), tf.constant(recon, tf.float32), max_val=1.0).numpy()
    assert metrics["test_ssim"] == pytest.approx(ssim.mean(), rel=1e-4)
    from vqvae_tf import LPIPS

    monkeypatch.setenv("VQVAE_LPIPS_EXAMPLES", "7")  # across the batches of 5
    capped = train_vqvae_lib.evaluate(model, as_ds(test_x), as_ds(fit_x))
    distances = LPIPS("vgg")(test_x, recon.astype(np.float32)).numpy()
    assert metrics["test_lpips"] == pytest.approx(distances.mean(), rel=1e-4) and metrics["test_lpips_examples"] == 12
    assert capped["test_lpips"] == pytest.approx(distances[:7].mean(), rel=1e-4) and capped["test_lpips_examples"] == 7
    # p(x|z): std = sqrt(mean squared error of the unclipped mean on the FIT set), in pixels.
    fit_mean = model.forward(fit_x)["mean"].numpy().astype(np.float64)
    std = np.sqrt(((fit_mean - fit_x) ** 2).mean()) * 255
    assert f"std {std:.2f}/255" in metrics["reconstruction_likelihood"]
    assert "fitted on 6 training images, evaluated on 12 test images" in metrics["reconstruction_likelihood_fit"]
    log_p = _np_discretized_gaussian_log_prob(np.round(test_x * 255.0), 255.0 * mean, std)
    bits = -log_p.sum() / test_x.size / np.log(2)
    assert metrics["bits_per_dim_reconstruction"] == pytest.approx(bits, rel=1e-4)
    # Without a fit set the std is fitted on the evaluated images themselves (and says so).
    own = train_vqvae_lib.evaluate(model, as_ds(test_x))
    own_std = np.sqrt(((mean - test_x) ** 2).mean()) * 255
    assert f"std {own_std:.2f}/255" in own["reconstruction_likelihood"]
    assert "fitted on the 12 evaluated images themselves" in own["reconstruction_likelihood_fit"]
    own_bits = -_np_discretized_gaussian_log_prob(np.round(test_x * 255.0), 255.0 * mean, own_std).sum()
    assert own["bits_per_dim_reconstruction"] == pytest.approx(own_bits / test_x.size / np.log(2), rel=1e-4)


def test_code_usage_chart_shows_the_sorted_usage_and_dead_codes():
    from vqvae_tf.utils import images

    counts = np.array([0, 5, 100, 0, 20, 1] + [0] * 10, np.float64)
    fraction, used, perplexity = images.usage_profile(counts)
    np.testing.assert_allclose(fraction[:4], np.array([100, 20, 5, 1]) / 126)
    np.testing.assert_array_equal(fraction[4:], 0.0)
    assert used == 4
    p = np.array([100, 20, 5, 1]) / 126
    assert perplexity == pytest.approx(np.exp(-(p * np.log(p)).sum()))
    chart = images.code_usage_chart(counts)
    assert chart.dtype == np.uint8 and chart.ndim == 3 and chart.shape[2] == 3 and chart.shape[1] >= 600
    assert (chart < 100).mean() > 0.005  # axes, text and bars drawn on the white background


class _Holder:
    """What `cli.override` reads of an absl flag holder."""

    def __init__(self, value):
        self.value = value


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(quantizer_dropout=0.5), "--quantizer_dropout=0.5 applies to the rvq quantizer, not 'ema'"),
        (dict(quantizer="fsq", num_quantizers=2), "--num_quantizers=2 applies to the rvq quantizer, not 'fsq'"),
        (dict(quantizer="lfq"), "--quantizer=lfq: LookupFreeQuantizer makes 2^embedding_dim codes"),
        (
            dict(quantizer="fsq", embedding_dim=5),
            "--embedding_dim=5 does not apply: the config's other fields make it 4",
        ),
        (dict(quantizer="rvq", learning_rate=0.0), "--learning_rate=0.0: learning_rate must be > 0"),
    ],
)
def test_override_refuses_with_the_flags_named(fields, message):
    """Flags only parse; the config and the quantizer layer validate, and `cli.override` names the
    flags in the usage error (the subprocess tests in test_reliability.py cover the scripts)."""
    with pytest.raises(app.UsageError, match=re.escape(message)):  # fashion_mnist: D = 32, too many bits for LFQ
        cli.override(get_config("fashion_mnist"), {name: _Holder(value) for name, value in fields.items()})
    config = cli.override(get_config("tiny"), {"quantizer": _Holder("lfq"), "embedding_dim": _Holder(6)})
    assert (config.num_embeddings, config.embedding_dim) == (64, 6)


def test_a_stage_dtype_policy_ends_with_the_stage(tmp_path):
    """A stage under mixed_bfloat16 leaves the global policy as it found it, so that the pipeline's
    next stages (a prior, the TFLite export, which needs float32 ops) do not inherit it; an "auto"
    stage without a probe of its own (a prior) runs in float32, as it says."""
    from vqvae_tf.training.workdir import Workdir

    stage = Workdir(str(tmp_path)).vqvae
    options = RunOptions(workdir=str(tmp_path), mixed_precision="mixed_bfloat16").validate()
    with loop.stage_run(options, stage, {}, {}, 8):
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    assert keras.mixed_precision.global_policy().name == "float32"
    keras.mixed_precision.set_global_policy("mixed_bfloat16")  # (a caller's own policy)
    try:
        options = RunOptions(workdir=str(tmp_path), mixed_precision="auto").validate()
        with loop.stage_run(options, Workdir(str(tmp_path)).prior, {}, {}, 8):
            assert keras.mixed_precision.global_policy().name == "float32"
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_a_second_prior_in_a_workdir_is_refused_saying_how_to_train_it_beside(tmp_path):
    """README's transformer beside make demo's PixelCNN: the prior stage refuses another network in
    W/prior and says how to train it on the same codes (copy vqvae/ and codes/ to a new workdir)."""
    from vqvae_tf.training.workdir import Workdir
    from vqvae_tf.utils import files

    w = Workdir(str(tmp_path))
    os.makedirs(w.prior.path)
    files.atomic_write_json(w.prior.config, {"format_version": 2, "config": {"prior": "pixelcnn"}})
    with pytest.raises(files.WorkdirError) as e:
        loop.check_saved_architecture(w.prior, {"prior": "transformer"})
    message = str(e.value)
    assert "prior: saved 'pixelcnn' vs now 'transformer'" in message
    assert f"cp -r {tmp_path}/vqvae {tmp_path}/codes NEW/" in message
    with pytest.raises(files.WorkdirError, match="Use another --workdir, or delete this one"):
        os.makedirs(w.vqvae.path)
        files.atomic_write_json(w.vqvae.config, {"format_version": 2, "config": {"num_embeddings": 8}})
        loop.check_saved_architecture(w.vqvae, {"num_embeddings": 16})


@pytest.mark.parametrize(
    "name,fields",
    [
        ("tiny", dict(quantizer="rvq", num_quantizers=2)),  # its stages' EMA codebooks and statistics
        ("tiny", dict(trainable="decoder")),  # a frozen encoder
        (
            "tiny",
            dict(
                trainable="decoder",
                network="taming",
                network_options=dict(block_out_channels=[32, 32]),
                downsample=2,
                image_shape=(16, 16, 3),
            ),
        ),  # fmt: skip
    ],
    ids=["rvq", "decoder_only", "decoder_only_taming"],
)
def test_checkpoints_restore_every_weight(name, fields, tmp_path):
    """Keras 3 keeps a layer's lists of sub-layers out of TF's object graph, so their variables
    reached a checkpoint only through the optimizer: a residual VQ's stages and a frozen encoder's
    levels were lost on resume and export. Every weight now comes back."""
    import dataclasses

    from vqvae_tf.training import checkpoints, train_vqvae_lib

    config = dataclasses.replace(get_config(name), **fields).validate()
    model = train_vqvae_lib.build_vqvae(config, 0.1, 0, for_training=True)
    assert checkpoints.untracked_state(model)  # (what the layout lists)
    rng = np.random.default_rng(0)
    for v in model.weights:
        v.assign(rng.normal(size=v.shape).astype(v.dtype))
    _, manager = checkpoints.make_manager(model, str(tmp_path))
    checkpoints.save(manager, 1)
    again = train_vqvae_lib.build_vqvae(config, 0.1, 1, for_training=True)
    checkpoint, manager = checkpoints.make_manager(again, str(tmp_path))
    checkpoints.restore_newest(checkpoint, manager)
    for a, b in zip(model.weights, again.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


def test_a_models_checkpoint_layout_is_unchanged_where_the_graph_reaches_everything():
    """Models whose every non-trainable variable TF's object graph reaches add nothing to their
    checkpoints (earlier runs' checkpoints still restore)."""
    import dataclasses

    from vqvae_tf.training import checkpoints, train_vqvae_lib

    for name, fields in (("tiny", {}), ("tiny", dict(quantizer="vq")), ("vqvae2_tiny", {})):
        model = train_vqvae_lib.build_vqvae(dataclasses.replace(get_config(name), **fields).validate(), 0.1, 0)
        assert checkpoints.untracked_state(model) == []
