import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from helpers import REPO_ROOT, train_tiny_vqvae

from vqvae_tf import PriorConfig, data, read_codes
from vqvae_tf.data import codes
from vqvae_tf.training import export_codes_lib, train_prior_lib, train_vqvae_lib
from vqvae_tf.training.options import RunOptions


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny VQ-VAE trained for a few steps on fake IDX data: (workdir, data_dir)."""
    return train_tiny_vqvae(str(tmp_path_factory.mktemp("prior")))


def test_codes_round_trip_equals_encode(trained, capsys):
    workdir, data_dir = trained
    meta = export_codes_lib.export_codes_stage(workdir, data_dir, batch_size=5)
    assert meta["counts"] == {"train": 40, "test": 12}
    assert meta["latent_shape"] == [7, 7] and meta["num_embeddings"] == 16 and meta["num_classes"] == 10
    assert meta["source_checkpoint"] == "ckpt-4"
    model = train_vqvae_lib.load_trained_model(workdir)
    for split in ("train", "test"):
        images, labels = next(iter(data.load("fashion_mnist", split, data_dir).batch(100)))
        exported = list(read_codes(os.path.join(workdir, "codes"), split).as_numpy_iterator())
        got_codes = np.stack([c for c, _ in exported])
        got_labels = np.array([y for _, y in exported])
        np.testing.assert_array_equal(got_codes, model.encode(images).numpy())
        np.testing.assert_array_equal(got_labels, labels.numpy())
        assert got_codes.dtype == np.int32
    capsys.readouterr()
    export_codes_lib.export_codes_stage(workdir, data_dir)
    assert "skipping" in capsys.readouterr().out


def test_export_is_atomic(trained, tmp_path, monkeypatch):
    workdir, data_dir = trained
    model = train_vqvae_lib.load_trained_model(workdir)
    calls = {"n": 0}
    real = codes.serialize_example

    def failing(c, y):
        calls["n"] += 1
        if calls["n"] > 20:
            raise RuntimeError("disk on fire")
        return real(c, y)

    monkeypatch.setattr(codes, "serialize_example", failing)
    out = tmp_path / "codes"
    with pytest.raises(RuntimeError, match="disk on fire"):
        export_codes_lib.export_codes(model, "fashion_mnist", str(out), data_dir=data_dir, batch_size=5)
    assert not out.exists()
    assert os.listdir(tmp_path) == []  # no temp directory left behind either
    with pytest.raises(codes.CodesError, match="Run train.export_codes first"):
        codes.load_meta(str(out))


def test_missing_shard_is_reported(trained, tmp_path):
    workdir, data_dir = trained
    model = train_vqvae_lib.load_trained_model(workdir)
    out = tmp_path / "codes"
    export_codes_lib.export_codes(model, "fashion_mnist", str(out), data_dir=data_dir)
    os.remove(out / "test-00000-of-00001.tfrecord")
    with pytest.raises(codes.CodesError, match="incomplete: shard test-00000-of-00001.tfrecord"):
        read_codes(str(out), "test")


def test_train_prior_metrics_and_resume(trained, capsys):
    workdir, data_dir = trained
    export_codes_lib.export_codes_stage(workdir, data_dir)
    config = PriorConfig(num_filters=8, num_layers=2, kernel_size=7, steps=4, batch_size=8, conditional=True)
    options = RunOptions(workdir=workdir, log_every=2, checkpoint_every=2, num_sample_columns=2)
    metrics = train_prior_lib.train_prior(config, options)
    assert metrics["steps"] == 4 and metrics["conditional"] is True
    # Independently: a NumPy log-softmax of the trained prior's logits at every test code.
    prior = train_prior_lib.load_trained_prior(workdir)
    nll = []
    for grid, label in read_codes(os.path.join(workdir, "codes"), "test").batch(16):
        logits = prior(grid, label).numpy().astype(np.float64)
        log_softmax = logits - logits.max(-1, keepdims=True)
        log_softmax -= np.log(np.exp(log_softmax).sum(-1, keepdims=True))
        nll.append(-np.take_along_axis(log_softmax, grid.numpy()[..., None], -1)[..., 0].mean(axis=(1, 2)))
    bits_per_code = np.concatenate(nll).mean() / np.log(2)
    assert metrics["test_bits_per_code"] == pytest.approx(bits_per_code, rel=1e-5)
    vq = json.load(open(os.path.join(workdir, "vqvae", "metrics.json")))
    # 7x7 codes of 28x28 images: 49/784 codes per dimension; K = 16 codes, 4 bits each (uniform).
    assert metrics["bits_per_dim"] == pytest.approx(bits_per_code / 16 + vq["bits_per_dim_reconstruction"], rel=1e-5)
    assert metrics["bits_per_dim_uniform_prior"] == pytest.approx(4 / 16 + vq["bits_per_dim_reconstruction"])
    assert "-log2 p(x|y)" in metrics["bits_per_dim_note"] and "training images" in metrics["bits_per_dim_note"]
    assert os.path.isfile(os.path.join(workdir, "prior", "samples.png"))
    config.steps = 6
    capsys.readouterr()
    assert train_prior_lib.train_prior(config, options)["steps"] == 6
    assert "Resumed from step 4" in capsys.readouterr().out
    config.num_filters = 16
    with pytest.raises(Exception, match="num_filters: saved 8 vs now 16"):
        train_prior_lib.train_prior(config, options)


def _run(module, *args, **env):
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={k: v for k, v in {**os.environ, **env}.items() if v is not None},
    )


def _quiet(res) -> None:
    """A script's console holds progress and results only: none of TensorFlow's C++ log (as
    "I0000 ..."/"E0000 ... remapper failed"), Keras' "ran out of data" warning or a traceback."""
    assert res.returncode == 0, res.stderr[-3000:]
    for noise in ("I0000", "W0000", "E0000", "remapper failed", "ran out of data", "Traceback"):
        assert noise not in res.stdout + res.stderr, (noise, res.stderr[-3000:])


@pytest.mark.slow
def test_scripts_end_to_end_on_real_fashion_mnist(scripts, tmp_path):
    w = str(tmp_path / "run")
    # (As a user runs them: without the tests' TF_CPP_MIN_LOG_LEVEL.)
    res = _run(
        "train.train_vqvae", f"--workdir={w}", "--config=tiny", "--log_every=10", "--checkpoint_every=10",
        TF_CPP_MIN_LOG_LEVEL=None,
    )  # fmt: skip
    _quiet(res)
    assert "step 20/20" in res.stdout and "ETA" in res.stdout and "ex/s" in res.stdout
    d = os.path.join(w, "vqvae")
    for name in ("config.json", "flags.txt", "metrics.json", "reconstructions.png", "codebook_usage.png"):
        assert os.path.isfile(os.path.join(d, name)), name
    assert os.listdir(os.path.join(d, "tensorboard"))
    metrics = json.load(open(os.path.join(d, "metrics.json")))
    for key in ("test_mse", "test_normalized_mse", "test_psnr", "perplexity", "codebook_usage"):
        assert key in metrics
    assert metrics["test_examples"] == 10000 and metrics["steps"] == 20
    # The same command with more steps resumes; the saved flagfile reproduces the run.
    # (The runs that need no fresh interpreter's console: forks of the warm script server.)
    res = scripts.run("train.train_vqvae", f"--flagfile={os.path.join(d, 'flags.txt')}", "--steps=30")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Resumed from step 20" in res.stdout and "step 30/30" in res.stdout
    res = scripts.run("train.export_codes", f"--workdir={w}")
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.load(open(os.path.join(w, "codes", "meta.json")))["counts"] == {"train": 60000, "test": 10000}
    res = _run(
        "train.train_prior",
        f"--workdir={w}",
        "--steps=20",
        "--num_filters=16",
        "--num_layers=3",
        "--kernel_size=5",
        "--batch_size=32",
        "--conditional",
        "--log_every=10",
        TF_CPP_MIN_LOG_LEVEL=None,
    )
    _quiet(res)
    assert "bits/code" in res.stdout and "ETA" in res.stdout
    metrics = json.load(open(os.path.join(w, "prior", "metrics.json")))
    for key in ("test_bits_per_code", "bits_per_dim", "steps"):
        assert key in metrics
    assert os.path.isfile(os.path.join(w, "prior", "samples.png"))
    # No --labels on a conditional prior: labels drawn from the training class frequencies with the
    # seed, printed; the same seed and those labels given with --labels give the same file (another
    # seed's other codes: test_pixelcnn).
    class_counts = json.load(open(os.path.join(w, "codes", "meta.json")))["class_counts"]
    assert len(class_counts) == 10 and sum(class_counts) == 60000
    from vqvae_tf.training.sample_lib import resolve_labels

    res = scripts.run("train.sample", f"--workdir={w}", "--num_samples=8", "--seed=3", f"--output={tmp_path / 'a.png'}")
    assert res.returncode == 0, res.stderr[-3000:]
    line = [x for x in res.stdout.splitlines() if "No --labels" in x]
    assert len(line) == 1 and "training class frequencies with seed 3" in line[0], res.stdout
    drawn = line[0].rsplit(": ", 1)[1].replace(" ", "")
    # The draw is the seeded one (test_labels_drawn_from_class_frequencies checks its frequencies).
    assert [int(v) for v in drawn.split(",")] == resolve_labels(None, 8, 10, class_counts=class_counts, seed=3).tolist()
    res = scripts.run(
        "train.sample",
        f"--workdir={w}",
        "--num_samples=8",
        "--seed=3",
        f"--labels={drawn}",
        f"--output={tmp_path / 'b.png'}",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert open(tmp_path / "a.png", "rb").read() == open(tmp_path / "b.png", "rb").read()
    res = scripts.run(
        "train.sample",
        f"--workdir={w}",
        "--num_samples=2",
        "--labels=0",
        "--temperature=0",
        f"--output={tmp_path / 'x.png'}",
    )
    assert res.returncode != 0 and "--temperature must be > 0" in res.stderr
    # An expected user error (no codes yet) ends in one line and exit status 2; the traceback on request.
    empty = str(tmp_path / "empty")
    res = _run("train.train_prior", f"--workdir={empty}", TF_CPP_MIN_LOG_LEVEL=None)
    assert res.returncode == 2 and res.stderr.splitlines() == [
        f"train.train_prior: error: No exported codes in {empty}/codes (meta.json missing). Run train.export_codes first."
    ], res.stderr[-3000:]
    res = scripts.run("train.train_prior", f"--workdir={empty}", env={"VQVAE_TRACEBACK": "1"})
    assert res.returncode == 1 and "Traceback" in res.stderr and "CodesError: No exported codes" in res.stderr


def test_labels_drawn_from_class_frequencies():
    from vqvae_tf.training.sample_lib import LabelsError, resolve_labels

    labels = resolve_labels(None, 20000, 3, class_counts=[1, 0, 3], seed=5)
    assert labels.dtype == np.int32 and set(np.unique(labels)) == {0, 2}
    assert np.mean(labels == 2) == pytest.approx(0.75, abs=0.02)
    np.testing.assert_array_equal(labels, resolve_labels(None, 20000, 3, class_counts=[1, 0, 3], seed=5))
    uniform = resolve_labels(None, 30000, 3, class_counts=None, seed=1)
    np.testing.assert_allclose(np.bincount(uniform) / 30000, 1 / 3, atol=0.02)
    assert resolve_labels(None, 4, 0) is None
    np.testing.assert_array_equal(resolve_labels(["2"], 3, 3), [2, 2, 2])
    with pytest.raises(LabelsError, match="unconditional"):
        resolve_labels(["1"], 2, 0)


def _numpy_nll(logits, grid):
    """Per code NLL (nats) of `grid` under `logits`, by a float64 NumPy log-softmax."""
    logits = logits.astype(np.float64)
    log_softmax = logits - logits.max(-1, keepdims=True)
    log_softmax -= np.log(np.exp(log_softmax).sum(-1, keepdims=True))
    return -np.take_along_axis(log_softmax, grid[..., None], -1)[..., 0]


def test_transformer_and_maskgit_through_the_prior_stage(trained, tmp_path, capsys):
    """--prior=transformer / maskgit: trained, evaluated (exact bits per code; MaskGIT's masked
    NLL, no bound), resumed, sampled by the stage's own sample path, and refused on a change of
    network."""
    import shutil

    from vqvae_tf import MaskGITPrior, TransformerPrior
    from vqvae_tf.training import sample_lib

    workdir, data_dir = trained
    export_codes_lib.export_codes_stage(workdir, data_dir)
    results = {}
    for network, cls in (("transformer", TransformerPrior), ("maskgit", MaskGITPrior)):
        w = str(tmp_path / network)
        for stage in ("vqvae", "codes"):
            shutil.copytree(os.path.join(workdir, stage), os.path.join(w, stage))
        config = PriorConfig(prior=network, num_filters=16, num_layers=1, steps=4, batch_size=8, conditional=True)
        options = RunOptions(workdir=w, log_every=2, checkpoint_every=2, num_sample_columns=2, eval_batch_size=5)
        metrics = train_prior_lib.train_prior(config, options)
        prior = train_prior_lib.load_trained_prior(w)
        assert type(prior) is cls and prior.num_classes == 10 and metrics["prior"] == network
        nll = []
        for grid, label in read_codes(os.path.join(w, "codes"), "test").batch(5):
            if network == "transformer":
                nll.append(_numpy_nll(prior(grid, label).numpy(), grid.numpy()).mean(axis=(1, 2)))
            else:  # the stage's masks: seed [0, 1] per evaluation batch
                mask = prior.random_mask(len(grid), tf.constant([0, 1])).numpy()
                per_code = _numpy_nll(prior(grid, mask, label).numpy(), grid.numpy())
                nll.append((per_code * mask).sum(axis=(1, 2)) / mask.sum(axis=(1, 2)))
        bits = np.concatenate(nll).mean() / np.log(2)
        if network == "transformer":
            assert metrics["test_bits_per_code"] == pytest.approx(bits, rel=1e-5)
            assert "bits_per_dim" in metrics and "test_masked_bits_per_code" not in metrics
        else:
            assert metrics["test_masked_bits_per_code"] == pytest.approx(bits, rel=1e-5)
            assert "bits_per_dim" not in metrics and "test_bits_per_code" not in metrics
            assert "no exact likelihood" in metrics["test_masked_bits_per_code_note"]
        assert os.path.isfile(os.path.join(w, "prior", "samples.png"))
        out = str(tmp_path / f"{network}.png")
        options_kw = {"steps": 3} if network == "maskgit" else {}
        sample_lib.write_samples(w, out, 4, seed=2, labels=["1"], **options_kw)
        results[network] = open(out, "rb").read()
        config.steps = 6
        capsys.readouterr()
        assert train_prior_lib.train_prior(config, options)["steps"] == 6
        assert "Resumed from step 4" in capsys.readouterr().out
        other = "maskgit" if network == "transformer" else "pixelcnn"
        with pytest.raises(Exception, match=f"prior: saved '{network}' vs now '{other}'"):
            train_prior_lib.train_prior(PriorConfig(prior=other, steps=6, batch_size=8, conditional=True), options)
    with pytest.raises(ValueError, match="MaskGITPrior has no sampling option fast"):
        sample_lib.write_samples(str(tmp_path / "maskgit"), str(tmp_path / "x.png"), 2, labels=["1"], fast=False)
    with pytest.raises(ValueError, match="TransformerPrior has no sampling option steps"):
        sample_lib.write_samples(str(tmp_path / "transformer"), str(tmp_path / "x.png"), 2, labels=["1"], steps=2)
