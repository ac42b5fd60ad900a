r"""The quantizer zoo compared on one network, one training budget and Fashion-MNIST.

Each variant trains the `fashion_mnist` VQ-VAE network (only the quantizer differs) with the
library's own stages: `train_vqvae_lib.train_and_evaluate` (test split: normalized MSE, PSNR,
codebook usage, perplexity, the bits/dim of p(x|z), training images/s), `export_codes_lib`, and a
class-conditional PixelCNN prior (`train_prior_lib`: test bits per code and the bits/dim bound of
the whole model). Runs live in `--workdir/<variant>/` and resume (a finished stage is skipped).

    python -m bench.quantizers --workdir=runs/bench_quantizers [--quick] [--only=fsq_8_6_5,rvq_2]
    python -m bench.quantizers --workdir=runs/bench_quantizers --steps=6000 --prior_steps=5000 --only=rotation
    python -m bench.quantizers --workdir=runs/bench_quantizers --speed   # training speed, side by side

The table's images/s come from each run's own training (other load on a shared machine shows in
them); `--speed` times every variant's `train_step` in one process instead, in alternating rounds
on one real batch, as ratios to today's default (`ema_kmeans_restart`).
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time

import tensorflow as tf
from absl import app, flags

from bench.common import machine, vqvae_and_codes, write_json
from vqvae_tf import configs, data
from vqvae_tf.models.priors.pixelcnn import PixelCNN
from vqvae_tf.training import train_prior_lib
from vqvae_tf.training.options import RunOptions
from vqvae_tf.training.workdir import Workdir

# name -> VQ-VAE config fields that differ from the fashion_mnist config (an EMA codebook with
# k-means init and dead-code restart, K = 256, D = 32).
VARIANTS = {
    "vq": dict(quantizer="vq", kmeans_init=False, dead_code_threshold=0.0),
    "ema": dict(quantizer="ema", kmeans_init=False, dead_code_threshold=0.0),
    "ema_kmeans_restart": dict(),
    "cosine": dict(distance="cosine"),
    "rotation": dict(gradient="rotation"),
    "fsq_8_6_5": dict(quantizer="fsq", fsq_levels=(8, 6, 5)),
    "fsq_8_5_5_5": dict(quantizer="fsq", fsq_levels=(8, 5, 5, 5)),
    "rvq_2x16": dict(quantizer="rvq", num_quantizers=2, num_embeddings=16),
    "rvq_2": dict(quantizer="rvq", num_quantizers=2),
    "rvq_4": dict(quantizer="rvq", num_quantizers=4),
    # The same 392 bits per image spent on 4x the positions: 14x14 codes of 2 bits (downsample 2).
    "fsq_2_2_at_14x14": dict(quantizer="fsq", fsq_levels=(2, 2), downsample=2),
    # Binary codes of 8 bits (K = 256, the default's budget): lookup-free and binary spherical.
    "lfq_8": dict(quantizer="lfq", embedding_dim=8),
    "bsq_8": dict(quantizer="bsq", embedding_dim=8),
}

flags.DEFINE_string("workdir", None, "Directory of the runs (one subdirectory per variant).", required=True)
flags.DEFINE_list("only", None, f"Variants to run (default: all): {', '.join(VARIANTS)}.")
flags.DEFINE_integer("steps", 2000, "VQ-VAE training steps per variant.")
flags.DEFINE_integer("prior_steps", 800, "Prior training steps per variant.")
flags.DEFINE_bool("quick", False, "200 + 100 steps: a smoke run of every variant.")
flags.DEFINE_bool("speed", False, "Only time each variant's train_step side by side (no training runs).")
flags.DEFINE_string("output", None, "JSON file for the results.")
FLAGS = flags.FLAGS

VQ_KEYS = (
    "test_normalized_mse",
    "test_psnr",
    "codebook_usage",
    "perplexity",
    "code_bits_per_image",
    "bits_per_dim_reconstruction",
    "images_per_second",
)
PRIOR_KEYS = ("test_bits_per_code", "bits_per_dim", "bits_per_dim_uniform_prior")


def run_variant(name: str, root: str, steps: int, prior_steps: int) -> dict:
    """Trains and evaluates variant `name` in ``root/name``; returns its row of the table."""
    config = variant_config(name, steps)
    options = RunOptions(os.path.join(root, name), log_every=500, checkpoint_every=max(steps, prior_steps))
    w = Workdir(options.workdir)
    start = time.time()
    vq = vqvae_and_codes(config, options)
    prior_config = dataclasses.replace(configs.get_prior_config("default"), steps=prior_steps, conditional=True)
    if not w.prior.trained_to(prior_steps):
        layers = PixelCNN.layers_to_reach(config.prior_grid_shape, prior_config.kernel_size)
        prior_config.num_layers = max(prior_config.num_layers, layers)  # residual VQ: a wider grid
        train_prior_lib.train_prior(prior_config, options)
    prior = w.prior.read_metrics()
    return {
        "variant": name,
        "config": {k: v for k, v in config.to_dict().items() if k in VARIANTS[name] or k == "quantizer"},
        **{k: vq.get(k) for k in VQ_KEYS},
        **{k: prior.get(k) for k in PRIOR_KEYS},
        "prior_steps": prior.get("steps"),
        "steps": vq.get("steps"),
        "seconds": round(time.time() - start, 1),
    }


def variant_config(name: str, steps: int = 6000):
    return dataclasses.replace(configs.get_config("fashion_mnist"), steps=steps, **VARIANTS[name]).validate()


def measure_speed(names, rounds: int = 3, steps: int = 15, batch: int = 128) -> dict:
    """images/s of each variant's compiled `train_step` on one real batch: per variant the median
    over `rounds` alternating rounds of `steps` steps (after warm-up)."""
    images = next(iter(data.load("fashion_mnist", "train").batch(batch)))[0]
    train_steps = {}
    for name in names:
        model = variant_config(name).build(data_variance=0.1246)
        model.compile(optimizer=variant_config(name).make_optimizer())
        step = tf.function(model.train_step)
        for _ in range(3):
            step(images)
        train_steps[name] = step
    timings = {name: [] for name in names}
    for _ in range(rounds):
        for name in names:
            start = time.perf_counter()
            for _ in range(steps):
                logs = train_steps[name](images)
            float(logs["loss"])
            timings[name].append(batch * steps / (time.perf_counter() - start))
    speed = {name: statistics.median(v) for name, v in timings.items()}
    base = speed.get("ema_kmeans_restart") or next(iter(speed.values()))
    return {
        name: {"images_per_second": v, "vs_default": v / base, "rounds": timings[name]} for name, v in speed.items()
    }


def main(argv):
    del argv
    if FLAGS.speed:
        result = measure_speed(FLAGS.only or list(VARIANTS))
        for name, r in result.items():
            print(f"| {name} | {r['images_per_second']:.0f} | {r['vs_default']:.2f} |")
        write_json(
            FLAGS.output or os.path.join(FLAGS.workdir, "quantizers_speed.json"),
            {"machine": machine(), "results": result},
        )
        return
    steps, prior_steps = (200, 100) if FLAGS.quick else (FLAGS.steps, FLAGS.prior_steps)
    names = FLAGS.only or list(VARIANTS)
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        raise app.UsageError(f"Unknown variants {unknown}; known: {', '.join(VARIANTS)}.")
    rows = []
    for name in names:
        rows.append(run_variant(name, FLAGS.workdir, steps, prior_steps))
        print(f"| {name} | " + " | ".join(f"{rows[-1][k]}" for k in VQ_KEYS + PRIOR_KEYS) + " |", flush=True)
    write_json(
        FLAGS.output or os.path.join(FLAGS.workdir, "quantizers.json"),
        {"machine": machine(), "steps": steps, "prior_steps": prior_steps, "results": rows},
    )


if __name__ == "__main__":
    app.run(main)
