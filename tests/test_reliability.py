"""Interruptions, corruption, concurrent use, hostile input and bad flags lose nothing."""

import errno
import glob
import os
import random
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from helpers import REPO_ROOT, fake_mnist_dir
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from vqvae_tf import PriorConfig, get_config
from vqvae_tf.data import DataSource, codes
from vqvae_tf.serving import export_savedmodel_lib, export_tflite_lib, savedmodel, tflite
from vqvae_tf.training import checkpoints, export_codes_lib, train_prior_lib, train_vqvae_lib
from vqvae_tf.training.options import RunOptions
from vqvae_tf.utils import files


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("idx"))
    fake_mnist_dir(root, n_train=64, n_test=16)
    return root


def tiny(steps):
    config = get_config("tiny")
    config.steps, config.batch_size = steps, 8
    return config


def run(workdir, data_dir, steps, **kw):
    kw.setdefault("log_every", 2)
    kw.setdefault("checkpoint_every", 2)
    return train_vqvae_lib.train_and_evaluate(
        tiny(steps), RunOptions(workdir=str(workdir), data=DataSource(data_dir=data_dir), **kw)
    )


def _script(module, *args, **popen):
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **popen,
    )


def _latest_step(workdir):
    path = tf.train.latest_checkpoint(os.path.join(workdir, "vqvae", "checkpoints"))
    return int(path.rsplit("-", 1)[1]) if path else 0


# ------------------------------------------------------------------ training interrupted


@pytest.mark.slow
def test_sigkill_at_random_moments_resumes(tmp_path, data_dir):
    """Kill -9 the training script several times (checkpoint every step, so kills land inside
    saves too); every time the latest checkpoint is complete and the next run resumes from it."""
    workdir = str(tmp_path / "w")
    args = [
        f"--workdir={workdir}",
        "--config=tiny",
        f"--data_dir={data_dir}",
        "--batch_size=8",
        "--steps=400",
        "--log_every=1",
        "--checkpoint_every=1",
    ]
    rng = random.Random(0)
    last = 0
    for _ in range(3):
        proc = _script("train.train_vqvae", *args)
        deadline = time.time() + 120
        for line in proc.stdout:  # wait until it trains, then kill at a random moment
            if line.startswith("step ") or time.time() > deadline:
                break
        time.sleep(rng.uniform(0.0, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        step = _latest_step(workdir)
        assert step >= last
        model = train_vqvae_lib.load_trained_model(workdir)  # the latest checkpoint restores completely
        assert int(model.optimizer.iterations.numpy()) == step
        last = step
    proc = _script("train.train_vqvae", *args[:-3], "--steps", str(last + 4), "--log_every=2", "--checkpoint_every=2")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    assert f"Resumed from step {last}" in out
    assert _latest_step(workdir) == last + 4


def test_half_written_checkpoint_is_never_latest(tmp_path, data_dir):
    run(tmp_path, data_dir, steps=4)
    ckpt_dir = tmp_path / "vqvae" / "checkpoints"
    # What a save killed before its state-file update leaves: files of a newer step, unlisted.
    (ckpt_dir / "ckpt-6.index").write_bytes(b"\x00garbage")
    (ckpt_dir / "ckpt-6_temp").mkdir()
    (ckpt_dir / "ckpt-6_temp" / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"x" * 10)
    model = train_vqvae_lib.load_trained_model(str(tmp_path))
    assert int(model.optimizer.iterations.numpy()) == 4


def test_optimizer_state_restored_exactly(tmp_path, data_dir):
    run(tmp_path, data_dir, steps=4)
    ckpt_path = tf.train.latest_checkpoint(str(tmp_path / "vqvae" / "checkpoints"))
    reader = tf.train.load_checkpoint(ckpt_path)
    model = train_vqvae_lib.load_trained_model(str(tmp_path))
    saved = {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map() if k.startswith("optimizer/")}
    restored = {
        f"optimizer/_variables/{i}/.ATTRIBUTES/VARIABLE_VALUE": v.numpy()
        for i, v in enumerate(model.optimizer.variables)
    }
    matched = [k for k in restored if k in saved]
    # Every slot variable (all but the iteration counter, checkpointed as optimizer/_iterations) matches.
    assert len(matched) == len(model.optimizer.variables) - 1 > 2
    assert (
        int(model.optimizer.iterations.numpy())
        == int(reader.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"))
        == 4
    )
    for k in matched:
        np.testing.assert_array_equal(restored[k], saved[k])


def test_corrupt_latest_checkpoint_falls_back(tmp_path, data_dir, capsys):
    run(tmp_path, data_dir, steps=4)
    ckpt_dir = tmp_path / "vqvae" / "checkpoints"
    data_file = next(ckpt_dir.glob("ckpt-4.data-*"))
    data_file.write_bytes(data_file.read_bytes()[:100])  # truncated
    capsys.readouterr()
    metrics = run(tmp_path, data_dir, steps=6)
    out = capsys.readouterr().out
    assert "ckpt-4 is corrupt or truncated" in out and "Fell back to checkpoint" in out
    assert "Resumed from step 2" in out and metrics["steps"] == 6


def test_all_checkpoints_corrupt_stops_instead_of_starting_over(tmp_path, data_dir):
    run(tmp_path, data_dir, steps=4)
    for f in glob.glob(str(tmp_path / "vqvae" / "checkpoints" / "ckpt-*.data-*")):
        with open(f, "r+b") as fh:
            fh.truncate(10)
    with pytest.raises(checkpoints.CheckpointError, match="refusing to start over silently"):
        run(tmp_path, data_dir, steps=6)


def test_disk_full_during_checkpoint(tmp_path, data_dir, monkeypatch):
    run(tmp_path, data_dir, steps=2)

    def full(self, checkpoint_number=None):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tf.train.CheckpointManager, "save", full)
    with pytest.raises(checkpoints.CheckpointError, match="No space left on device.*Earlier checkpoints are intact"):
        run(tmp_path, data_dir, steps=4)
    monkeypatch.undo()
    assert int(train_vqvae_lib.load_trained_model(str(tmp_path)).optimizer.iterations.numpy()) == 2


def test_disk_full_writing_metrics_keeps_old_file(tmp_path, data_dir, monkeypatch):
    run(tmp_path, data_dir, steps=2)
    metrics_path = tmp_path / "vqvae" / "metrics.json"
    before = metrics_path.read_text()
    real = os.replace

    def full(src, dst):
        if str(dst).endswith("metrics.json"):
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OSError, match="No space left"):
        run(tmp_path, data_dir, steps=4)
    monkeypatch.undo()
    assert metrics_path.read_text() == before
    assert not [f for f in os.listdir(tmp_path / "vqvae") if f.startswith(".tmp-")]


# ------------------------------------------------------------------ one workdir, one run


def test_second_process_refused_and_lock_released_on_crash(tmp_path, data_dir):
    lock_dir = tmp_path / "vqvae"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import sys, time; sys.path.insert(0, {REPO_ROOT!r}); from vqvae_tf.utils import files; "
            f"files.WorkdirLock({str(lock_dir)!r}).acquire(); print('locked', flush=True); time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    try:
        proc = _script(
            "train.train_vqvae",
            f"--workdir={tmp_path}",
            "--config=tiny",
            f"--data_dir={data_dir}",
            "--steps=2",
            "--batch_size=8",
        )
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode != 0
        assert f"is in use by another process (pid {holder.pid})" in out
    finally:
        holder.send_signal(signal.SIGKILL)  # a crash: the kernel releases the flock
        holder.wait()
    files.WorkdirLock(str(lock_dir)).acquire().release()
    run(tmp_path, data_dir, steps=2)


# ------------------------------------------------------------------ exports interrupted


@pytest.mark.slow
def test_sigkill_during_code_export_leaves_nothing(tmp_path, scripts):
    # 20,000 training images: the export is killed after its first 2,000, far from its end.
    data = str(tmp_path / "idx")
    fake_mnist_dir(data, n_train=20_000, n_test=100)
    workdir = str(tmp_path / "w")
    res = scripts.run("train.train_vqvae", f"--workdir={workdir}", "--config=tiny", "--steps=2", f"--data_dir={data}")
    assert res.returncode == 0, res.stderr[-2000:]
    proc = _script("train.export_codes", f"--workdir={workdir}", "--batch_size=100")
    for line in proc.stdout:
        if "[export_codes] train:" in line:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not os.path.exists(os.path.join(workdir, "codes"))
    with pytest.raises(codes.CodesError):
        codes.load_meta(os.path.join(workdir, "codes"))
    leftovers = [f for f in os.listdir(workdir) if f.startswith(".tmp-codes")]
    assert leftovers  # the hidden temp dir of the killed run; never read, replaced by the next run
    export_codes_lib.export_codes_stage(workdir)
    assert codes.load_meta(os.path.join(workdir, "codes"))["counts"] == {"train": 20_000, "test": 100}


def test_failed_tflite_conversion_leaves_no_partial_file(tmp_path, data_dir, monkeypatch):
    run(tmp_path / "w", data_dir, steps=2)
    real = tflite.convert
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # the second quantization's decoder
            raise tflite.ConversionError("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(tflite, "convert", flaky)
    out = tmp_path / "e"
    with pytest.raises(tflite.ConversionError):
        export_tflite_lib.export_tflite_stage(
            str(tmp_path / "w"), str(out), ("float32", "float16"), data_dir, num_test_images=8
        )
    files = sorted(os.listdir(out / "tflite"))
    assert files == ["decoder_float32.tflite", "encoder_float32.tflite"]  # complete ones only, no report
    for f in files:
        assert tflite.run_signature(
            (out / "tflite" / f).read_bytes(),
            f.split("_")[0].replace("der", "de"),
            **(
                {"codes": np.zeros((1, 7, 7), np.int32)}
                if f.startswith("decoder")
                else {"images": np.zeros((1, 28, 28, 1), np.float32)}
            ),
        )


# ------------------------------------------------------------------ hostile serving input


@pytest.fixture(scope="module")
def served(tmp_path_factory, data_dir):

    root = tmp_path_factory.mktemp("served")
    workdir = str(root / "w")
    run(workdir, data_dir, steps=2)
    export_codes_lib.export_codes_stage(workdir, data_dir)
    train_prior_lib.train_prior(
        PriorConfig(num_filters=8, num_layers=2, kernel_size=7, steps=1, batch_size=8, conditional=True),
        RunOptions(workdir=workdir, log_every=1, num_sample_columns=2),
    )
    paths = export_savedmodel_lib.export_savedmodel_stage(workdir, str(root / "e"))
    return tf.saved_model.load(paths["vqvae"]).signatures, tf.saved_model.load(paths["prior"]).signatures


OK_ERRORS = (tf.errors.InvalidArgumentError,)
# The Python signature wrapper rejects a wrong dtype or rank before TF runs (TF Serving answers
# those with InvalidArgument too).
BINDING_ERRORS = (TypeError, ValueError)


def _call(fn, **inputs):
    try:
        return fn(**inputs), None
    except OK_ERRORS as e:
        # Our messages say what "must" hold; TF's own name the expected dtype / shape / format.
        # ("Invalid JPEG data": libjpeg on a JPEG header with nothing after it, b"\xff\xd8\xff".)
        clear = (
            "must",
            "not compatible",
            "image file format",
            "expected to be a",
            "Input is empty",
            "Invalid JPEG data",
            "Invalid PNG",  # libpng on a bare PNG signature, b"\x89PNG\r\n\x1a\n"
        )
        assert any(c in str(e) for c in clear), str(e)[:500]
        return None, e
    except BINDING_ERRORS as e:
        return None, e


dims = st.integers(0, 9)
hostile_settings = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))


@hostile_settings
@given(
    b=st.integers(0, 3),
    h=dims,
    w=dims,
    values=st.sampled_from([0, 15, 16, -1, 2**31 - 1, -(2**31)]),
    dtype=st.sampled_from([np.int32, np.int64, np.float32]),
)
def test_hostile_decode(served, b, h, w, values, dtype):
    vq, _ = served
    codes_in = np.full((b, h, w), values).astype(dtype)
    for name in ("decode", "decode_png"):
        out, err = _call(vq[name], codes=tf.constant(codes_in))
        valid = dtype == np.int32 and (h, w) == (7, 7) and (b == 0 or 0 <= values < 16)
        assert (err is None) == valid, (name, codes_in.shape, dtype, values, err)
        if valid:
            key = "images" if name == "decode" else "png_bytes"
            assert out[key].shape[0] == b


@hostile_settings
@given(
    b=st.integers(0, 3),
    shape=st.sampled_from([(28, 28, 1), (28, 28, 3), (32, 32, 1), (28, 1, 1)]),
    value=st.sampled_from([0.0, 0.5, 1.0, -1e-6, 1.0000001, np.nan, np.inf, -np.inf, 3.4e38]),
)
def test_hostile_encode(served, b, shape, value):
    vq, _ = served
    images = np.full((b,) + shape, value, np.float32)
    for name in ("encode", "serving_default"):
        out, err = _call(vq[name], images=tf.constant(images))
        valid = shape == (28, 28, 1) and (b == 0 or 0.0 <= value <= 1.0)
        assert (err is None) == valid, (name, images.shape, value, err)
        if valid:
            assert out["codes"].shape == (b, 7, 7)
            assert np.all((out["codes"].numpy() >= 0) & (out["codes"].numpy() < 16))


@hostile_settings
@given(payload=st.one_of(st.binary(max_size=64), st.sampled_from(["png28", "png30", "jpeg28", "png28rgb"])))
def test_hostile_image_bytes(served, payload):
    vq, _ = served
    # 28x28 images in a supported format are valid (an RGB one is converted to grayscale); a
    # wrong size or bytes that are not an image are not.
    valid = payload in ("png28", "jpeg28", "png28rgb")
    if payload == "png28":
        payload = tf.io.encode_png(np.zeros((28, 28, 1), np.uint8)).numpy()
    elif payload == "png30":
        payload = tf.io.encode_png(np.zeros((30, 28, 1), np.uint8)).numpy()
    elif payload == "png28rgb":
        payload = tf.io.encode_png(np.zeros((28, 28, 3), np.uint8)).numpy()
    elif payload == "jpeg28":
        payload = tf.io.encode_jpeg(np.zeros((28, 28, 1), np.uint8)).numpy()
    out, err = _call(vq["encode_image_bytes"], image_bytes=tf.constant([payload]))
    assert (err is None) == valid, (payload[:16], err)
    if valid:
        assert out["codes"].shape == (1, 7, 7)


def test_image_bytes_of_another_rank_is_refused_by_name(served):
    """TF Serving feeds the graph whatever shape a request has (the Python signature's shape check
    is not there): called on the graph itself, a scalar or a matrix of strings is refused naming
    `image_bytes`, while a vector (also an empty one) is encoded."""
    vq, _ = served
    fn = vq["encode_image_bytes"]
    png = tf.io.encode_png(np.zeros((28, 28, 1), np.uint8))
    for strings in (png, tf.reshape(png, [1, 1]), tf.stack([png, png])[None], tf.reshape(tf.stack([png, png]), [2, 1])):
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"image_bytes must be a vector \[B\]"):
            fn._call_flat([strings], fn.captured_inputs)
    for n in (0, 1, 3):
        out = fn._call_flat([tf.stack([png] * n) if n else tf.zeros([0], tf.string)], fn.captured_inputs)
        assert out["codes"].shape == (n, 7, 7)


@hostile_settings
@given(
    n=st.sampled_from([-5, 0, 1, 3, 256, 257, 2**31 - 1]),
    t=st.sampled_from([1.0, 0.0, -1.0, 1e-30, np.nan, np.inf, 3.4e38]),
    seed=st.sampled_from([0, -1, 2**31 - 1]),
    labels=st.sampled_from(["match", "short", "bad"]),
)
@example(n=1, t=float("inf"), seed=0, labels="match")  # (always tried: once let through by chance)
def test_hostile_sample(served, n, t, seed, labels):
    _, prior = served
    count = max(0, min(n, 300))
    lab = {
        "match": np.zeros(count, np.int32),
        "short": np.zeros(max(count - 1, 0), np.int32),
        "bad": np.full(count, 10, np.int32),
    }[labels]
    out, err = _call(
        prior["serving_default"],
        num_samples=tf.constant(n, tf.int32),
        temperature=tf.constant(t, tf.float32),
        seed=tf.constant(seed, tf.int32),
        labels=tf.constant(lab),
    )
    valid = 1 <= n <= 256 and 0 < t < np.inf and labels == "match"  # (inf: "temperature must be finite")
    assert (err is None) == valid, (n, t, seed, labels, err)
    if valid:
        assert out["codes"].shape == (n, 7, 7) and np.isfinite(out["images"].numpy()).all()


# ------------------------------------------------------------------ bad flags


BAD_FLAGS = [
    ("train.train_vqvae", ["--steps=-3"], "flag --steps=-3: -3 is not a positive integer"),
    ("train.train_vqvae", ["--batch_size=0"], "flag --batch_size=0: 0 is not a positive integer"),
    ("train.train_vqvae", ["--learning_rate=0"], "--learning_rate=0.0: learning_rate must be > 0"),
    ("train.train_vqvae", ["--quantizer=kmeans"], "kmeans"),
    (
        "train.train_vqvae",
        ["--quantizer=fsq", "--fsq_levels=8,1"],
        "--fsq_levels=8,1: every entry of levels must be an integer >= 2",
    ),
    (
        "train.train_vqvae",
        ["--quantizer=rvq", "--distance=cosine"],
        "--distance=cosine applies to the vq and ema quantizers",
    ),
    (
        "train.train_vqvae",
        ["--quantizer=rvq", "--quantizer_dropout=2"],
        "--quantizer_dropout=2.0: quantizer_dropout must be in [0, 1]",
    ),
    ("train.train_vqvae", ["--jit_compile=sometimes"], "flag --jit_compile=sometimes: expected true, false or auto"),
    (
        "train.pipeline",
        ["--quantizer=fsq", "--gradient=rotation"],
        "--gradient=rotation applies to the vq, ema and rvq quantizers, not 'fsq'",
    ),
    ("train.train_vqvae", ["--strategy=tpu"], "tpu"),
    ("train.train_vqvae", ["--mixed_precision=fp8"], "fp8"),
    ("train.train_vqvae", ["--checkpoint_every=0"], "flag --checkpoint_every=0: 0 is not a positive integer"),
    ("train.train_prior", ["--dropout=1.5"], "--dropout=1.5: dropout must be in [0, 1)"),
    ("train.train_prior", ["--kernel_size=4"], "--kernel_size=4: kernel_size must be odd"),
    ("train.train_prior", ["--num_layers=0"], "flag --num_layers=0: 0 is not a positive integer"),
    ("train.sample", ["--output=x.png", "--temperature=-1"], "--temperature must be > 0"),
    ("train.sample", ["--output=x.png", "--num_samples=0"], "flag --num_samples=0: 0 is not a positive integer"),
    ("train.sample", ["--output=x.png", "--top_k=0"], "flag --top_k=0: 0 is not a positive integer"),
    (
        "export.export_savedmodel",
        ["--export_dir=/tmp/x", "--version=0"],
        "flag --version=0: 0 is not a positive integer",
    ),
    ("export.export_tflite", ["--export_dir=/tmp/x", "--quantization=int4"], "--quantization must be from"),
    ("train.pipeline", ["--recipe=huge"], "huge"),
    ("train.pipeline", ["--model=vqvae2", "--quantizer=fsq"], "--quantizer does not apply to the vqvae2 config"),
]


@pytest.mark.parametrize("module,args,message", BAD_FLAGS)
def test_bad_flags_rejected_up_front(scripts, tmp_path, module, args, message):
    res = scripts.run(module, f"--workdir={tmp_path}", *args, timeout=120)
    assert res.returncode != 0
    assert message in res.stderr, res.stderr[-1500:]
    assert not os.listdir(tmp_path)  # nothing was started


def test_atomic_write_keeps_old_content_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "a.json"
    files.atomic_write_json(str(path), {"v": 1})

    def boom(fd):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        files.atomic_write_json(str(path), {"v": 2})
    monkeypatch.undo()
    assert path.read_text().strip().startswith("{") and '"v": 1' in path.read_text()
    assert os.listdir(tmp_path) == ["a.json"]
    assert savedmodel.existing_versions(str(tmp_path)) == []


def test_atomic_outputs_get_the_umask_permissions(tmp_path):
    # Temp files are 0600 and temp directories 0700; what is renamed into place must be readable
    # as if written with open() / mkdir() (TF Serving may run as another user, presets are shared).
    old = os.umask(0o022)
    try:
        files.atomic_write_json(str(tmp_path / "a.json"), {"v": 1})
        with files.atomic_directory(str(tmp_path / "d")) as tmp:
            files.atomic_write_text(os.path.join(tmp, "x.txt"), "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "a.json").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(tmp_path / "d").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(tmp_path / "d" / "x.txt").st_mode) == 0o644
