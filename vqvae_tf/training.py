"""Training and evaluation of the VQ-VAE (the library behind `python -m train.train_vqvae`).

Writes under ``WORKDIR/vqvae/``: ``config.json``, ``flags.txt``, ``checkpoints/``,
``tensorboard/``, ``metrics.json``, ``reconstructions.png``, ``codebook_usage.png``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from vqvae_tf import checkpoints, data, images, io_utils, likelihoods
from vqvae_tf.configs import MODEL_FIELDS, VQVAEConfig
from vqvae_tf.models import VQVAE
from vqvae_tf.quantizers import CodebookUsage

STRATEGIES = ("default", "mirrored", "multi_worker")
# The quality figures of WORKDIR/vqvae/metrics.json (with `steps` and `images_per_second`).
QUALITY_KEYS = (
    "test_mse",
    "test_normalized_mse",
    "test_psnr",
    "perplexity",
    "codebook_usage",
    "bits_per_dim_reconstruction",
)
MIXED_PRECISION = ("none", "mixed_bfloat16", "mixed_float16")
SUBDIR = "vqvae"


# ------------------------------------------------------------------------------ strategies


def make_strategy(name) -> tf.distribute.Strategy:
    """`default`, `mirrored` (all local GPUs, else all logical CPUs) or `multi_worker` (TF_CONFIG).
    A `tf.distribute.Strategy` object is returned as it is."""
    if isinstance(name, tf.distribute.Strategy):
        return name
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise ValueError("--strategy=multi_worker needs the TF_CONFIG environment variable (see BUILD.md).")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"Unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}.")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type in (None, "chief") or (
        task_type == "worker" and task_id == 0 and "chief" not in resolver.cluster_spec().as_dict()
    )


def check_batch_size(batch_size: int, strategy: tf.distribute.Strategy) -> None:
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise ValueError(
            f"batch_size {batch_size} is not divisible by the {replicas} replicas of the "
            f"{type(strategy).__name__}; use a multiple of {replicas}."
        )


# ------------------------------------------------------------------------------ workdir


@contextlib.contextmanager
def stage_directory(workdir: str, subdir: str, strategy: tf.distribute.Strategy):
    """Yields (directory, chief). The chief works in WORKDIR/subdir and holds its lock for the
    duration; the other workers of a multi-worker job write their copies of the (collective)
    checkpoint saves to a scratch directory."""
    if not is_chief(strategy):
        yield tempfile.mkdtemp(prefix=f"{subdir}-worker-"), False
        return
    directory = os.path.join(workdir, subdir)
    io_utils.ensure_writable_dir(directory)
    with io_utils.WorkdirLock(directory):
        yield directory, True


def write_run_files(directory: str, saved: dict, flags_text: str | None) -> None:
    """config.json (what `load_trained_*` rebuilds the model from) and flags.txt."""
    io_utils.atomic_write_json(os.path.join(directory, "config.json"), saved)
    if flags_text is not None:
        io_utils.atomic_write_text(os.path.join(directory, "flags.txt"), flags_text)


def restore_for_training(model, directory: str, total: int, chief: bool):
    """(checkpoint manager, current step, summary writer), after resuming from the newest
    readable checkpoint in ``directory/checkpoints``."""
    ckpt, manager = make_checkpoint(model, os.path.join(directory, "checkpoints"))
    restored = checkpoints.restore_or_initialize(ckpt, manager)
    step = int(model.optimizer.iterations.numpy())
    if restored:
        log_line(f"Resumed from step {step} ({restored}).")
    if step >= total:
        log_line(f"Already at step {step} >= --steps={total}; nothing to train.")
    writer = (
        tf.summary.create_file_writer(os.path.join(directory, "tensorboard"))
        if chief
        else tf.summary.create_noop_writer()
    )
    return manager, step, writer


def check_workdir_config(directory: str, config: VQVAEConfig) -> None:
    """Refuses a workdir that holds a model trained with another network configuration."""
    check_saved_config(directory, config.to_dict(), MODEL_FIELDS)


def check_saved_config(directory: str, current: dict, fields) -> None:
    """Raises WorkdirError if ``directory/config.json`` differs from `current` in `fields`."""
    path = os.path.join(directory, "config.json")
    if not os.path.exists(path):
        return
    with open(path) as f:
        saved = json.load(f).get("config", {})
    diffs = [f"{k}: saved {saved.get(k)!r} vs now {current[k]!r}" for k in fields if saved.get(k) != current[k]]
    if diffs:
        raise io_utils.WorkdirError(
            f"{directory} holds a model trained with another config ({'; '.join(diffs)}). "
            "Use another --workdir, or delete this one to start over."
        )


def build_model(config: VQVAEConfig, data_variance: float, seed: int) -> VQVAE:
    model = VQVAE.from_preset(config, data_variance=data_variance, seed=seed)
    lr = config.learning_rate
    if config.lr_schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=config.steps, alpha=0.1)
    model.compile(optimizer=keras.optimizers.Adam(lr))
    model.build()
    model.optimizer.build(model.trainable_variables)
    return model


def make_checkpoint(model, directory: str, max_to_keep: int = 3):
    ckpt = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
    return ckpt, tf.train.CheckpointManager(ckpt, directory, max_to_keep=max_to_keep, checkpoint_name="ckpt")


def load_trained_model(workdir: str) -> VQVAE:
    """The VQ-VAE of ``WORKDIR/vqvae`` at its latest readable checkpoint (for export and codes)."""
    return load_trained_model_and_path(workdir)[0]


def load_trained_model_and_path(workdir: str):
    """(VQVAE, path of the checkpoint it was restored from)."""
    directory = os.path.join(workdir, SUBDIR)
    config_path = os.path.join(directory, "config.json")
    if not os.path.exists(config_path):
        raise FileNotFoundError(
            f"No trained VQ-VAE in {workdir}: {config_path} is missing. Run train.train_vqvae first."
        )
    with open(config_path) as f:
        saved = json.load(f)
    config = VQVAEConfig.from_dict(saved["config"])
    model = build_model(config, saved["data_variance"], saved.get("seed", 0))
    ckpt, manager = make_checkpoint(model, os.path.join(directory, "checkpoints"))
    path = checkpoints.restore_or_initialize(ckpt, manager)
    if path is None:
        raise FileNotFoundError(f"No checkpoint in {manager.directory}. Run train.train_vqvae first.")
    return model, path


# ------------------------------------------------------------------------------ evaluation


def evaluate(model: VQVAE, dataset: tf.data.Dataset) -> dict:
    """Full pass over `dataset` (batches of (images, labels)). Returns the metrics.json fields
    that depend on the data: test_mse, test_normalized_mse, test_psnr, perplexity,
    codebook_usage, bits_per_dim_reconstruction (+ the likelihood used for it)."""
    usage = CodebookUsage(model.num_embeddings)
    dims = float(np.prod(model.image_shape))

    @tf.function
    def first_pass(x):
        out = model.forward(x, training=False)
        err = tf.reduce_mean(tf.square(out["mean"] - x), axis=[1, 2, 3])
        clipped_err = tf.reduce_mean(tf.square(out["reconstructions"] - x), axis=[1, 2, 3])
        nll = tf.zeros_like(err)
        if model.likelihood == "logistic":
            distribution = model.decoder_distribution(out["mean"], out["log_scale"])
            nll = -likelihoods.log_prob_per_image(distribution, x)
        return err, clipped_err, nll, out["indices"]

    errs, clipped, nlls = [], [], []
    for x, _ in dataset:
        err, cerr, nll, codes = first_pass(x)
        usage.update_state(codes)
        errs.append(err.numpy())
        clipped.append(cerr.numpy())
        nlls.append(nll.numpy())
    errs, clipped, nlls = map(np.concatenate, (errs, clipped, nlls))
    mse = float(clipped.mean())
    if model.likelihood == "logistic":
        nll_per_image = nlls
        likelihood = "discretized logistic (decoder's own head)"
    else:
        # A discretized Gaussian around the decoder mean whose std is the maximum-likelihood
        # global value, sqrt(MSE), in pixel units. Its scale needs the first pass, so the
        # decoder runs again rather than holding every mean in memory (large datasets).
        scale = max(math.sqrt(float(errs.mean())) * 255.0, 1e-3)

        @tf.function
        def gaussian_nll(x):
            mean = model.forward(x, training=False)["mean"]
            return -likelihoods.log_prob_per_image(model.decoder_distribution(mean, scale=scale), x)

        nll_per_image = np.concatenate([gaussian_nll(x).numpy() for x, _ in dataset])
        likelihood = f"discretized Gaussian, std {scale:.2f}/255 (MLE from the test MSE)"
    result = usage.result()
    return {
        "test_mse": mse,
        "test_normalized_mse": mse / model.data_variance,
        "test_psnr": float(np.mean(10.0 * np.log10(1.0 / np.maximum(clipped, 1e-10)))),
        "perplexity": float(result["perplexity"]),
        "codebook_usage": float(result["codebook_usage"]),
        "bits_per_dim_reconstruction": float(nll_per_image.mean() / dims / math.log(2.0)),
        "reconstruction_likelihood": likelihood,
        "test_examples": int(len(errs)),
        "_code_counts": usage.counts().numpy(),
    }


# ------------------------------------------------------------------------------ training


@dataclasses.dataclass
class RunOptions:
    workdir: str
    dataset: str | None = None
    data_dir: str | None = None
    strategy: str | tf.distribute.Strategy = "default"
    mixed_precision: str = "none"
    seed: int = 0
    log_every: int = 100
    checkpoint_every: int = 500
    flags_text: str | None = None  # written to flags.txt (absl flagfile format)
    eval_batch_size: int = 500


def log_line(msg: str) -> None:
    """Progress output: stdout, flushed (absl logging stays for warnings)."""
    print(msg, flush=True)


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def train_and_evaluate(config: VQVAEConfig, options: RunOptions) -> dict:
    """Trains (or resumes) to `config.steps`, evaluates on the full test split and writes the
    artifacts. Returns the metrics dict written to metrics.json."""
    config.validate()
    if options.mixed_precision not in MIXED_PRECISION:
        raise ValueError(f"mixed_precision must be one of {MIXED_PRECISION}, got {options.mixed_precision!r}.")
    for name in ("log_every", "checkpoint_every"):
        if getattr(options, name) <= 0:
            raise ValueError(f"{name} must be positive, got {getattr(options, name)}.")
    dataset_name = options.dataset or config.dataset
    config.dataset = dataset_name
    strategy = make_strategy(options.strategy)
    check_batch_size(config.batch_size, strategy)
    info = data.dataset_info(dataset_name, options.data_dir)
    if tuple(info.image_shape) != tuple(config.image_shape):
        raise ValueError(
            f"Dataset {dataset_name!r} has images of shape {info.image_shape}, but the config expects "
            f"{tuple(config.image_shape)}; pick the matching --config preset."
        )

    with stage_directory(options.workdir, SUBDIR, strategy) as (directory, chief):
        return _train(config, options, strategy, info, directory, chief)


def _train(config, options, strategy, info, directory, chief):
    check_workdir_config(directory, config)
    if options.mixed_precision != "none":
        keras.mixed_precision.set_global_policy(options.mixed_precision)
    variance = data.pixel_variance(config.dataset, options.data_dir)
    if chief:
        saved = {
            "config": config.to_dict(),
            "data_variance": variance,
            "seed": options.seed,
            "strategy": str(options.strategy),
            "mixed_precision": options.mixed_precision,
        }
        write_run_files(directory, saved, options.flags_text)
    keras.utils.set_random_seed(options.seed)
    with strategy.scope():
        model = build_model(config, variance, options.seed)
    manager, step, writer = restore_for_training(model, directory, config.steps, chief)
    images_per_second = None
    if step < config.steps:
        images_per_second = _run_training(model, config, options, strategy, manager, writer, step, chief)

    if not chief:
        return {}
    test = data.batched(data.load(config.dataset, "test", options.data_dir), options.eval_batch_size, training=False)
    log_line("Evaluating on the full test split...")
    metrics = evaluate(model, test)
    counts = metrics.pop("_code_counts")
    metrics_path = os.path.join(directory, "metrics.json")
    if images_per_second is None and os.path.exists(metrics_path):
        with open(metrics_path) as f:
            images_per_second = json.load(f).get("images_per_second")
    metrics.update(
        steps=int(model.optimizer.iterations.numpy()),
        images_per_second=images_per_second,
        num_embeddings=config.num_embeddings,
        dataset=config.dataset,
    )
    io_utils.atomic_write_json(metrics_path, metrics)

    x, _ = next(iter(test))
    x = x[:32]
    grid = images.comparison_grid(x.numpy(), model(x).numpy())
    images.write_png(os.path.join(directory, "reconstructions.png"), grid)
    images.write_png(
        os.path.join(directory, "codebook_usage.png"),
        images.bar_chart(counts, bar_width=max(1, 512 // config.num_embeddings)),
    )
    with writer.as_default(step=metrics["steps"]):
        for k in QUALITY_KEYS:
            tf.summary.scalar(f"test/{k}", metrics[k])
        tf.summary.histogram("test/code_counts", counts)
        tf.summary.image("test/reconstructions", grid[None])
    writer.flush()
    log_line("Test metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float)))
    return metrics


def _run_training(model, config, options, strategy, manager, writer, step, chief):
    # Shuffle differently after a resume rather than replaying the first batches.
    train = data.batched(
        data.load(config.dataset, "train", options.data_dir),
        config.batch_size,
        training=True,
        seed=options.seed * 1_000_003 + step,
    )

    def summaries():
        tf.summary.histogram("train/code_usage_ema", model.quantizer.code_usage)

    def line(logs):
        return (
            f"loss {logs['loss']:.4f}  recon {logs['reconstruction_loss']:.4f}  "
            f"commit {logs['commitment_loss']:.4f}  perplexity {logs['perplexity']:.1f}"
        )

    log_line(
        f"Training {config.dataset} to step {config.steps} (batch {config.batch_size}, {strategy.num_replicas_in_sync} replica(s))."
    )
    return run_loop(
        model,
        train,
        strategy,
        manager,
        writer,
        step,
        config.steps,
        config.batch_size,
        options.log_every,
        options.checkpoint_every,
        config.jit_compile,
        line,
        summaries,
    )


def run_loop(
    model,
    train,
    strategy,
    manager,
    writer,
    step,
    total,
    batch_size,
    log_every,
    checkpoint_every,
    jit_compile=False,
    format_logs=None,
    summaries=None,
):
    """Runs `model.train_step` under `strategy` from `step` to `total`, with progress lines
    (losses, images/s, ETA), TensorBoard scalars and checkpoints every `checkpoint_every` steps
    (by step count, so that all workers of a multi-worker job save together). Returns the
    measured examples/s after the first (compiling) call, or None."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        opts = tf.data.Options()
        opts.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        train = train.with_options(opts)
    iterator = iter(strategy.experimental_distribute_dataset(train))
    step_fn = model.train_step
    if jit_compile and strategy.num_replicas_in_sync == 1:
        step_fn = tf.function(model.train_step, jit_compile=True)

    @tf.function
    def run_steps(iterator, n):
        for _ in tf.range(n):
            strategy.run(step_fn, args=(next(iterator),))

    start_step, t_start, t_timed, timed_steps = step, time.time(), None, 0
    while step < total:
        n = min(log_every - step % log_every, checkpoint_every - step % checkpoint_every, total - step)
        t0 = time.time()
        run_steps(iterator, tf.constant(n))
        step += n
        if t_timed is None:  # the first call compiles; time from the second on
            t_timed = time.time()
        else:
            timed_steps += n
        logs = {m.name: float(m.result()) for m in model.metrics}
        for m in model.metrics:
            m.reset_state()
        elapsed = time.time() - t_timed
        rate = timed_steps * batch_size / elapsed if timed_steps else n * batch_size / (time.time() - t0)
        eta = (total - step) * batch_size / max(rate, 1e-9)
        detail = format_logs(logs) if format_logs else "  ".join(f"{k} {v:.4f}" for k, v in logs.items())
        log_line(f"step {step}/{total}  {detail}  {rate:.0f} ex/s  ETA {format_duration(eta)}")
        with writer.as_default(step=step):
            for k, v in logs.items():
                tf.summary.scalar(f"train/{k}", v)
            tf.summary.scalar("train/examples_per_second", rate)
            if summaries:
                summaries()
        if step % checkpoint_every == 0 or step == total:
            checkpoints.save(manager, step)  # a collective under multi-worker: every worker saves
    writer.flush()
    log_line(f"Trained steps {start_step}..{step} in {time.time() - t_start:.0f}s.")
    return (timed_steps * batch_size / (time.time() - t_timed)) if timed_steps else None
