"""Training of the PixelCNN prior on exported codes (the library behind `train.train_prior`).

Writes under ``WORKDIR/prior/``: ``config.json``, ``flags.txt``, ``checkpoints/``,
``tensorboard/``, ``metrics.json`` and ``samples.png``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

import keras
import numpy as np
import tensorflow as tf

from vqvae_tf import checkpoints, codes, images, io_utils
from vqvae_tf.pixelcnn import PixelCNN
from vqvae_tf.sampling import sample_codes
from vqvae_tf.training import (
    check_batch_size,
    check_saved_config,
    load_trained_model,
    log_line,
    make_checkpoint,
    make_strategy,
    restore_for_training,
    run_loop,
    stage_directory,
    write_run_files,
)

SUBDIR = "prior"
ARCH_FIELDS = ("num_filters", "num_layers", "kernel_size", "conditional", "dropout")


@dataclasses.dataclass
class PriorConfig:
    # Measured on Fashion-MNIST codes (BENCHMARKS.md): 3.44 test bits/code in 5000 steps, ~9 min
    # on 2 CPU cores; 64 filters / k=5 was 3x slower per step for a similar curve per minute.
    num_filters: int = 32
    num_layers: int = 8
    kernel_size: int = 3
    dropout: float = 0.0
    conditional: bool = False
    steps: int = 5000
    batch_size: int = 128
    learning_rate: float = 1e-3
    lr_schedule: str = "cosine"

    def validate(self) -> "PriorConfig":
        for name in ("num_filters", "num_layers", "steps", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if self.kernel_size < 3 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and >= 3, got {self.kernel_size}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}.")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}.")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}.")
        return self


@dataclasses.dataclass
class PriorRunOptions:
    workdir: str
    strategy: str | tf.distribute.Strategy = "default"
    seed: int = 0
    log_every: int = 200
    checkpoint_every: int = 1000
    flags_text: str | None = None
    num_sample_columns: int = 10


def build_prior(config: PriorConfig, meta: dict) -> PixelCNN:
    num_classes = meta["num_classes"] if config.conditional else 0
    prior = PixelCNN(
        num_embeddings=meta["num_embeddings"],
        latent_shape=tuple(meta["latent_shape"]),
        num_filters=config.num_filters,
        num_layers=config.num_layers,
        kernel_size=config.kernel_size,
        num_classes=num_classes,
        dropout=config.dropout,
    )
    lr = config.learning_rate
    if config.lr_schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=config.steps, alpha=0.1)
    prior.compile(optimizer=keras.optimizers.Adam(lr))
    prior.optimizer.build(prior.trainable_variables)
    return prior


def load_trained_prior(workdir: str) -> PixelCNN:
    """The prior of ``WORKDIR/prior`` at its latest readable checkpoint."""
    directory = os.path.join(workdir, SUBDIR)
    config_path = os.path.join(directory, "config.json")
    if not os.path.exists(config_path):
        raise FileNotFoundError(
            f"No trained prior in {workdir}: {config_path} is missing. Run train.train_prior first."
        )
    with open(config_path) as f:
        saved = json.load(f)
    prior = build_prior(PriorConfig(**saved["config"]).validate(), saved["codes_meta"])
    ckpt, manager = make_checkpoint(prior, os.path.join(directory, "checkpoints"))
    if checkpoints.restore_or_initialize(ckpt, manager) is None:
        raise FileNotFoundError(f"No checkpoint in {manager.directory}. Run train.train_prior first.")
    return prior


def evaluate_prior(prior: PixelCNN, dataset: tf.data.Dataset) -> float:
    """Mean negative log-likelihood of the codes in bits per code over `dataset` (batched)."""

    @tf.function
    def nll(codes_batch, labels):
        labels = labels if prior.num_classes else None
        return -prior.log_prob(codes_batch, labels)

    total, count = 0.0, 0
    for codes_batch, labels in dataset:
        total += float(tf.reduce_sum(nll(codes_batch, labels)))
        count += int(codes_batch.shape[0])
    h, w = prior.latent_shape
    return total / max(count, 1) / (h * w) / math.log(2.0)


def sample_grid(prior: PixelCNN, vqvae, columns: int = 10, seed: int = 0, temperature: float = 1.0):
    """uint8 grid of decoded samples: one row per class (conditional) or a columns x columns grid."""
    if prior.num_classes:
        labels = np.repeat(np.arange(prior.num_classes, dtype=np.int32), columns)
        sampled = sample_codes(prior, len(labels), temperature=temperature, seed=seed, labels=labels)
    else:
        sampled = sample_codes(prior, columns * columns, temperature=temperature, seed=seed)
    return images.grid(vqvae.decode(sampled).numpy(), columns, scale=2)


def train_prior(config: PriorConfig, options: PriorRunOptions) -> dict:
    """Trains (or resumes) the prior to `config.steps`, evaluates it on the test codes and writes
    metrics.json and samples.png. Returns the metrics."""
    config.validate()
    for name in ("log_every", "checkpoint_every"):
        if getattr(options, name) <= 0:
            raise ValueError(f"{name} must be positive, got {getattr(options, name)}.")
    codes_dir = os.path.join(options.workdir, "codes")
    meta = codes.load_meta(codes_dir)
    if config.conditional and not meta["num_classes"]:
        raise ValueError(f"--conditional needs class labels, but {meta['dataset']} has none.")
    strategy = make_strategy(options.strategy)
    check_batch_size(config.batch_size, strategy)
    with stage_directory(options.workdir, SUBDIR, strategy) as (directory, chief):
        check_saved_config(directory, dataclasses.asdict(config), ARCH_FIELDS)
        if chief:
            saved = {"config": dataclasses.asdict(config), "codes_meta": meta, "seed": options.seed}
            write_run_files(directory, saved, options.flags_text)
        keras.utils.set_random_seed(options.seed)
        with strategy.scope():
            prior = build_prior(config, meta)
        manager, step, writer = restore_for_training(prior, directory, config.steps, chief)
        if step < config.steps:
            train = (
                codes.read_codes(codes_dir, "train")
                .shuffle(60_000, seed=options.seed * 1_000_003 + step)
                .repeat()
                .batch(config.batch_size, drop_remainder=True)
                .prefetch(tf.data.AUTOTUNE)
            )
            log_line(
                f"Training the prior to step {config.steps} (batch {config.batch_size}, "
                f"{strategy.num_replicas_in_sync} replica(s))."
            )
            run_loop(
                prior,
                train,
                strategy,
                manager,
                writer,
                step,
                config.steps,
                config.batch_size,
                options.log_every,
                options.checkpoint_every,
                format_logs=lambda logs: f"nll {logs['loss']:.4f} nats  {logs['bits_per_code']:.3f} bits/code",
            )
        if not chief:
            return {}
        return _finish(prior, config, options, directory, codes_dir, meta, writer)


def _finish(prior, config, options, directory, codes_dir, meta, writer):
    log_line("Evaluating the prior on the test codes...")
    test = codes.read_codes(codes_dir, "test").batch(500)
    bits_per_code = evaluate_prior(prior, test)
    h, w = meta["latent_shape"]
    dims = int(np.prod(meta["image_shape"]))
    metrics = {
        "test_bits_per_code": bits_per_code,
        "log2_num_embeddings": math.log2(meta["num_embeddings"]),
        "steps": int(prior.optimizer.iterations.numpy()),
        "conditional": bool(prior.num_classes),
    }
    vq_metrics_path = os.path.join(options.workdir, "vqvae", "metrics.json")
    if os.path.exists(vq_metrics_path):
        with open(vq_metrics_path) as f:
            vq_metrics = json.load(f)
        # Section 3.3: -log p(x) <= -log p(x|z_q) - log p(z_q), in bits per image dimension.
        metrics["bits_per_dim"] = bits_per_code * h * w / dims + vq_metrics["bits_per_dim_reconstruction"]
        metrics["bits_per_dim_note"] = (
            "upper bound (-log2 p(z_q) - log2 p(x|z_q)) / (H*W*C) on the test split; p(x|z_q): "
            + vq_metrics.get("reconstruction_likelihood", "decoder likelihood")
        )
    vqvae = load_trained_model(options.workdir)
    grid = sample_grid(prior, vqvae, columns=options.num_sample_columns, seed=options.seed)
    images.write_png(os.path.join(directory, "samples.png"), grid)
    io_utils.atomic_write_json(os.path.join(directory, "metrics.json"), metrics)
    with writer.as_default(step=metrics["steps"]):
        tf.summary.scalar("test/bits_per_code", bits_per_code)
        tf.summary.image("samples", grid[None])
    writer.flush()
    log_line("Prior metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float)))
    return metrics
