"""Helpers shared by the test modules (test modules import from here, never from each other)."""

import gzip
import os
import struct

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_idx(path, array, magic=None, truncate=0, compress=False):
    array = np.asarray(array, np.uint8)
    header = magic if magic is not None else struct.pack(">HBB", 0, 8, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    raw = (header + array.tobytes())[: len(header) + array.size - truncate]
    opener = gzip.open if compress else open
    with opener(path, "wb") as f:
        f.write(raw)
    return path


def fake_mnist_dir(root, n_train=12, n_test=5, compress=True, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    ext = ".gz" if compress else ""
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        imgs = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, (n,), dtype=np.uint8)
        write_idx(os.path.join(root, f"{prefix}-images-idx3-ubyte{ext}"), imgs, compress=compress)
        write_idx(os.path.join(root, f"{prefix}-labels-idx1-ubyte{ext}"), labels, compress=compress)
        arrays[prefix] = (imgs, labels)
    return arrays


def fashion_mnist_arrays(split="train", n=None):
    """Real Fashion-MNIST images uint8 [N,28,28] and labels of `split` (the first `n`)."""
    from vqvae_tf.data import idx_files

    images, labels = idx_files.load_arrays(idx_files.find_idx_dir("fashion_mnist"), split)
    return images[:n, ..., 0], labels[:n]


def write_image(path, array, fmt=None, **save_args):
    """Writes uint8 [H,W] (grey), [H,W,3] (RGB), [H,W,2] (grey+alpha) or [H,W,4] (RGBA) with
    Pillow in `fmt` (PNG, JPEG, BMP, GIF, WEBP; default from the extension)."""
    from PIL import Image

    array = np.asarray(array, np.uint8)
    mode = {2: "L", 3: {2: "LA", 3: "RGB", 4: "RGBA"}.get(array.shape[-1])}[array.ndim]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array, mode).save(path, format=fmt, **save_args)
    return path


def image_folder(root, images, labels=None, fmt="png", rgb=False, splits=None, start=0, **save_args):
    """Writes `images` (uint8 [N,H,W]) as files ROOT/[SPLIT/][cLABEL/]NNNNN.FMT: class folders
    when `labels` is given, split folders train/ and test/ when `splits` (a list of split names per
    image) is. RGB images get a distinct tint per channel. Returns the relative paths."""
    paths = []
    for i, image in enumerate(images):
        if rgb:
            image = np.stack([image, image // 2, 255 - image], axis=-1)
        parts = [root]
        if splits is not None:
            parts.append(splits[i])
        if labels is not None:
            parts.append(f"c{int(labels[i])}")
        parts.append(f"{start + i:05d}.{fmt}")
        write_image(os.path.join(*parts), image, fmt={"jpg": "JPEG"}.get(fmt, fmt.upper()), **save_args)
        paths.append(os.path.relpath(os.path.join(*parts), root).replace(os.sep, "/"))
    return paths


def train_and_export_tiny(root, prior_num_layers, with_prior=True, **config_fields):
    """The `tiny` VQ-VAE (with `config_fields`) trained 3 steps of 8 on fake IDX data (32 train,
    10 test images) under `root`, its codes exported, a conditional prior (8 filters, 7x7 kernel,
    `prior_num_layers` blocks) trained 2 steps on them unless not `with_prior`, and both exported
    as SavedModels. Returns workdir, data_dir, export_dir, paths, codes meta, the trained models and
    the loaded SavedModels (the prior's None without one)."""
    import dataclasses

    import tensorflow as tf

    from vqvae_tf import PriorConfig, get_config
    from vqvae_tf.data import DataSource
    from vqvae_tf.serving import export_savedmodel_lib
    from vqvae_tf.training import export_codes_lib, train_prior_lib, train_vqvae_lib
    from vqvae_tf.training.options import RunOptions

    data_dir = os.path.join(root, "idx")
    fake_mnist_dir(data_dir, n_train=32, n_test=10)
    workdir = os.path.join(root, "work")
    config = dataclasses.replace(get_config("tiny"), steps=3, batch_size=8, **config_fields).validate()
    train_vqvae_lib.train_and_evaluate(
        config, RunOptions(workdir=workdir, data=DataSource(data_dir=data_dir), log_every=3)
    )
    meta = export_codes_lib.export_codes_stage(workdir, data_dir)
    if with_prior:
        prior_config = PriorConfig(
            num_filters=8, num_layers=prior_num_layers, kernel_size=7, steps=2, batch_size=8, conditional=True
        )
        train_prior_lib.train_prior(prior_config, RunOptions(workdir=workdir, log_every=2, num_sample_columns=2))
    export_dir = os.path.join(root, "serving")
    paths = export_savedmodel_lib.export_savedmodel_stage(workdir, export_dir)
    return {
        "workdir": workdir,
        "data_dir": data_dir,
        "export_dir": export_dir,
        "paths": paths,
        "meta": meta,
        "vqvae": train_vqvae_lib.load_trained_model(workdir),
        "prior": train_prior_lib.load_trained_prior(workdir) if with_prior else None,
        "vq_sm": tf.saved_model.load(paths["vqvae"]),
        "prior_sm": tf.saved_model.load(paths["prior"]) if with_prior else None,
    }


def train_tiny_vqvae(root):
    """The `tiny` VQ-VAE trained for 4 steps of 8 on fake IDX data (40 train, 12 test images)
    under `root`: (workdir, data_dir)."""
    from vqvae_tf import get_config
    from vqvae_tf.data import DataSource
    from vqvae_tf.training import train_vqvae_lib
    from vqvae_tf.training.options import RunOptions

    data_dir = os.path.join(root, "idx")
    fake_mnist_dir(data_dir, n_train=40, n_test=12)
    config = get_config("tiny")
    config.steps, config.batch_size = 4, 8
    workdir = os.path.join(root, "work")
    train_vqvae_lib.train_and_evaluate(
        config, RunOptions(workdir=workdir, data=DataSource(data_dir=data_dir), log_every=2, checkpoint_every=2)
    )
    return workdir, data_dir


def warmup_requests(saved_model_dir: str):
    """(signature name, inputs, request) of each TF Serving warmup record of a SavedModel version."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    from vqvae_tf.serving import savedmodel

    path = os.path.join(saved_model_dir, savedmodel.WARMUP_PATH)
    for record in tf.data.TFRecordDataset(path):
        request = prediction_log_pb2.PredictionLog.FromString(record.numpy()).predict_log.request
        inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
        yield request.model_spec.signature_name, inputs, request


def peaked(model, std=0.3, seed=0):
    """`model` with every trainable weight drawn from N(0, std): peaked logits. An untrained prior's
    are nearly uniform (0.003-0.008 nats apart), so a sampler that feeds it the wrong context still
    picks the same codes; with these, a mistake changes them. Returns the model."""
    rng = np.random.default_rng(seed)
    for v in model.trainable_variables:
        v.assign(rng.normal(0.0, std, tuple(v.shape)).astype(np.float32))
    return model


def logit_spread(prior, codes, labels=None) -> float:
    """Mean max - min of the prior's logits per position on `codes` (nats)."""
    logits = np.asarray(prior(codes, labels), np.float64)
    return float((logits.max(-1) - logits.min(-1)).mean())


def train_prior_on(prior, codes, steps: int) -> tuple:
    """`steps` compiled train steps of a compiled `prior` on `codes`: (test loss before, the last
    step's logs, test loss after), each test loss from freshly reset metrics."""

    def test_loss():
        for m in prior.metrics:
            m.reset_state()
        loss = float(prior.test_step(codes)["loss"])
        for m in prior.metrics:
            m.reset_state()
        return loss

    import tensorflow as tf

    first = test_loss()
    step = tf.function(prior.train_step)
    for _ in range(steps):
        logs = step(codes)
    return first, logs, test_loss()


def numpy_uniform(seed: int, stream: int, n: int) -> np.ndarray:
    """hash_random.uniform in Python integers (mod 2**32), from its documented formula."""

    def mix(x):
        x ^= x >> 16
        x = (x * 0x7FEB352D) & 0xFFFFFFFF
        x ^= x >> 15
        x = (x * 0x846CA68B) & 0xFFFFFFFF
        return x ^ (x >> 16)

    base = mix(mix(seed & 0xFFFFFFFF) ^ (stream & 0xFFFFFFFF))
    return np.array([(mix((base + i * 0x9E3779B9) & 0xFFFFFFFF) >> 8) / 2**24 for i in range(n)])


class ScriptServer:
    """Runs ``python -m <module> <args>`` as forks of one warm interpreter (tests/script_server.py):
    `run` returns a `subprocess.CompletedProcess` as `subprocess.run(..., capture_output=True,
    text=True)` would. For the scripts' quick refusals; a run that trains belongs in a subprocess."""

    def __init__(self):
        import subprocess
        import sys

        env = {**os.environ, "PYTHONPATH": REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self._proc = subprocess.Popen(
            [sys.executable, os.path.join(REPO_ROOT, "tests", "script_server.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO_ROOT,
            env=env,
        )

    def run(self, module: str, *args, cwd: str = REPO_ROOT, env: dict | None = None, timeout: float = 300):
        return self._run({"module": module}, args, cwd, env, timeout)

    def run_file(self, path: str, *args, cwd: str = REPO_ROOT, env: dict | None = None, timeout: float = 600):
        """As ``python -c "$(cat PATH)" args`` would (the working directory first on the path)."""
        return self._run({"path": str(path)}, args, cwd, env, timeout)

    def _run(self, what: dict, args, cwd, env, timeout):
        import json
        import subprocess

        module = what.get("module") or what["path"]
        case = {**what, "args": list(args), "cwd": str(cwd), "env": env or {}, "timeout": timeout}
        self._proc.stdin.write(json.dumps(case) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the script server ended (exit status {self._proc.wait()})")
        r = json.loads(line)
        return subprocess.CompletedProcess([module, *args], r["returncode"], r["stdout"], r["stderr"])

    def close(self):
        self._proc.stdin.close()
        self._proc.wait(timeout=60)
