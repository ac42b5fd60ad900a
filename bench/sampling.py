r"""Sampling code grids from the prior against the keras.io example's sampler, side by side.

- baseline: the keras.io VQ-VAE example's PixelCNN and sampler (`bench/keras_io_pixelcnn.py`:
  128 filters, one `predict` of the whole grid per position), at 64 grids and at one;
- ours in Python: `sample_codes` (the cached sampler, default; the plain one; each with XLA);
- ours served: the prior SavedModel's `serving_default` (codes and decoded images) and its
  XLA-compiled `sample_xla` (export --xla_sampler), loaded with `tf.saved_model.load` as TF
  Serving would;
- on device: the TFLite generator (prior sampling + decoding, builtin ops) under LiteRT, per
  sample at batch 1 and 16;
- per-position cost of the cached sampler on 7x7, 14x14 and 32x32 grids (the prior's
  architecture, its stack sized to reach each grid, and one stack for all: the 32x32 grid's),
  one grid per call.

    python -m bench.sampling [--workdir=runs/demo] [--quick] [--output=...]

Without a workdir a freshly initialised prior of the default architecture is timed (speed does
not depend on the weights).
"""

from __future__ import annotations

import tempfile
import time

import numpy as np
import tensorflow as tf
from absl import app, flags

from bench import keras_io_pixelcnn
from bench.common import machine, timeit, write_json
from vqvae_tf import PixelCNN, get_config, sample_codes
from vqvae_tf.serving import savedmodel, tflite
from vqvae_tf.training import train_prior_lib, train_vqvae_lib

flags.DEFINE_string("workdir", None, "Workdir with a trained VQ-VAE and prior (optional).")
flags.DEFINE_bool("quick", False, "Fewer repeats, no per-grid-size sweep.")
flags.DEFINE_string("output", None, "JSON file for the results.")
FLAGS = flags.FLAGS
ROUNDS = 3


def baseline_seconds(prior, n: int) -> float:
    """The keras.io sampler on a PixelCNN of the example's architecture for the same grid and K."""
    model = keras_io_pixelcnn.build(prior.num_embeddings, prior.latent_shape)
    model.predict(np.zeros((n, *prior.latent_shape), np.int32), verbose=0)  # built once, as a user would
    start = time.perf_counter()
    keras_io_pixelcnn.sample(model, n, prior.latent_shape)
    return time.perf_counter() - start


def served_sampler(prior, vqvae, directory):
    """run(n, signature): images from the prior SavedModel's `serving_default` or `sample_xla`."""
    path = savedmodel.export_prior(prior, vqvae, directory, xla_sampler=True)
    signatures = tf.saved_model.load(path).signatures

    def run(n, signature="serving_default"):
        inputs = dict(num_samples=tf.constant(n), temperature=tf.constant(1.0), seed=tf.constant(1))
        if prior.num_classes:
            inputs["labels"] = tf.constant(np.arange(n) % prior.num_classes, tf.int32)
        return signatures[signature](**inputs)["images"].numpy()

    return run


def tflite_generator(prior, vqvae, directory, repeats: int) -> dict:
    """ms per sample of the float32 TFLite generator at batch 1 and 16 (LiteRT, this process)."""
    from ai_edge_litert.interpreter import Interpreter

    report = tflite.export_generator(prior, vqvae, directory, quantizations=("float32",))["float32"]
    runner = Interpreter(model_path=f"{directory}/tflite/{report['file']}").get_signature_runner("generate")
    result = {"code_agreement_vs_tensorflow": report["code_agreement_vs_tensorflow"]}
    for n in (1, 16):
        inputs = {
            "uniforms": np.random.default_rng(0)
            .uniform(size=(n, *prior.generator_uniforms_shape(8)))
            .astype(np.float32),
            "temperature": np.float32(1.0),
        }
        if prior.num_classes:
            inputs["labels"] = (np.arange(n) % prior.num_classes).astype(np.int32)
        result[f"ms_per_sample_batch_{n}"] = timeit(lambda inputs=inputs: runner(**inputs), repeats) / n * 1000
    return result


def per_position(shapes, repeats: int, num_layers=None) -> list:
    """Seconds per sample of the cached sampler, one grid per call, for each grid shape: the
    prior's stack sized to reach the grid (num_layers None), or `num_layers` blocks for all."""
    rows = []
    for shape in shapes:
        prior = PixelCNN(256, shape, num_layers=num_layers, kernel_size=3)
        seconds = timeit(lambda prior=prior: sample_codes(prior, 1, seed=1).numpy(), repeats)
        positions = shape[0] * shape[1]
        rows.append(
            {
                "latent_shape": list(shape),
                "num_layers": prior.num_layers,
                "seconds_per_sample": seconds,
                "ms_per_position": seconds / positions * 1000,
                "us_per_position_and_layer": seconds / positions / prior.num_layers * 1e6,
            }
        )
    return rows


def main(argv):
    del argv
    if FLAGS.workdir:
        prior = train_prior_lib.load_trained_prior(FLAGS.workdir)
        vqvae = train_vqvae_lib.load_trained_model(FLAGS.workdir)
    else:
        prior = PixelCNN(256, (7, 7), num_classes=10)  # the default architecture
        vqvae = get_config("fashion_mnist").build()
    repeats = 3 if FLAGS.quick else 10

    def labels(n):
        return (np.arange(n) % prior.num_classes).astype(np.int32) if prior.num_classes else None

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        served = served_sampler(prior, vqvae, tmp)
        for n in (64, 1):
            variants = {
                "fast": (lambda n=n: sample_codes(prior, n, seed=1, labels=labels(n)).numpy(), repeats),
                "fast_xla": (
                    lambda n=n: sample_codes(prior, n, seed=1, labels=labels(n), jit_compile=True).numpy(),
                    repeats,
                ),
                "plain": (lambda n=n: sample_codes(prior, n, seed=1, labels=labels(n), fast=False).numpy(), 2),
                "savedmodel_serving_default": (lambda n=n: served(n), repeats),
                "savedmodel_sample_xla": (lambda n=n: served(n, "sample_xla"), repeats),
            }
            # Rounds over the variants, the best median of each: a shared machine drifts.
            rounds = [{k: timeit(fn, r) for k, (fn, r) in variants.items()} for _ in range(ROUNDS)]
            ours = {k: min(r[k] for r in rounds) for k in variants}
            base = baseline_seconds(prior, n)
            results[f"{n}_grids"] = {
                "seconds": {"keras_io_sampler": base, **ours},
                "speedup_vs_keras_io": {k: base / v for k, v in ours.items()},
            }
        results["tflite_generator"] = tflite_generator(prior, vqvae, tmp, repeats)
    same = bool(
        np.array_equal(
            sample_codes(prior, 16, seed=3, labels=labels(16), fast=False).numpy(),
            sample_codes(prior, 16, seed=3, labels=labels(16), fast=True).numpy(),
        )
    )
    shapes = [(7, 7)] if FLAGS.quick else [(7, 7), (14, 14), (32, 32)]
    write_json(
        FLAGS.output,
        {
            "machine": machine(),
            "latent_shape": list(prior.latent_shape),
            "prior": {
                "num_filters": prior.num_filters,
                "num_layers": prior.num_layers,
                "kernel_size": prior.kernel_size,
            },
            "results": results,
            "fast_equals_plain": same,
            "per_position": per_position(shapes, max(2, repeats // 3)),
            # One stack for every grid (the one the largest grid needs): flat cost per position.
            "per_position_same_stack": per_position(
                shapes, max(2, repeats // 3), PixelCNN.layers_to_reach(shapes[-1], 3)
            ),
        },
    )


if __name__ == "__main__":
    app.run(main)
