r"""Sampling 64 code grids from the prior: the compiled plain sampler, the compiled row-cached
("fast") sampler, and a naive loop that calls the model once per position the way the keras.io
example does (`predict` on the whole grid, then pick one position).

    python -m bench.sampling --workdir=runs/demo [--quick] [--output=...]

Without a workdir a freshly initialised prior of the default architecture is timed (speed does
not depend on the weights).
"""

from __future__ import annotations

import time

import numpy as np
from absl import app, flags

from bench.common import machine, timeit, write_json
from vqvae_tf import PixelCNN, sample_codes
from vqvae_tf.training import train_prior_lib

flags.DEFINE_string("workdir", None, "Workdir with a trained prior (optional).")
flags.DEFINE_integer("num_samples", 64, "Samples per call.")
flags.DEFINE_bool("quick", False, "Fewer repeats.")
flags.DEFINE_string("output", None, "JSON file for the results.")
FLAGS = flags.FLAGS


def naive_sample(prior, n, labels, seed=0):
    """One full `predict` call per position, sampling with NumPy: the keras.io way."""
    h, w = prior.latent_shape
    rng = np.random.default_rng(seed)
    codes = np.zeros((n, h, w), np.int32)
    inputs = (codes, labels) if labels is not None else codes
    for i in range(h):
        for j in range(w):
            logits = prior.predict(inputs, verbose=0, batch_size=n)[:, i, j]
            p = np.exp(logits - logits.max(-1, keepdims=True))
            p /= p.sum(-1, keepdims=True)
            codes[:, i, j] = [rng.choice(len(q), p=q) for q in p]
    return codes


def main(argv):
    del argv
    if FLAGS.workdir:
        prior = train_prior_lib.load_trained_prior(FLAGS.workdir)
    else:
        prior = PixelCNN(256, (7, 7), num_classes=10)  # the default architecture
    n = FLAGS.num_samples
    labels = (np.arange(n) % prior.num_classes).astype(np.int32) if prior.num_classes else None
    repeats = 2 if FLAGS.quick else 5
    plain = timeit(lambda: sample_codes(prior, n, seed=1, labels=labels, fast=False).numpy(), repeats)
    fast = timeit(lambda: sample_codes(prior, n, seed=1, labels=labels, fast=True).numpy(), repeats)
    fast_xla = timeit(
        lambda: sample_codes(prior, n, seed=1, labels=labels, fast=True, jit_compile=True).numpy(), repeats
    )
    same = bool(
        np.array_equal(
            sample_codes(prior, n, seed=1, labels=labels, fast=False).numpy(),
            sample_codes(prior, n, seed=1, labels=labels, fast=True).numpy(),
        )
    )
    keras_inputs = (
        (np.zeros((n,) + prior.latent_shape, np.int32), labels)
        if labels is not None
        else np.zeros((n,) + prior.latent_shape, np.int32)
    )
    prior.predict(keras_inputs, verbose=0, batch_size=n)  # build the predict function once, as a user would
    start = time.perf_counter()
    naive_sample(prior, n, labels)
    naive = time.perf_counter() - start
    write_json(
        FLAGS.output,
        {
            "machine": machine(),
            "num_samples": n,
            "latent_shape": list(prior.latent_shape),
            "prior": {
                "num_filters": prior.num_filters,
                "num_layers": prior.num_layers,
                "kernel_size": prior.kernel_size,
            },
            "seconds": {
                "naive_predict_loop": naive,
                "compiled_plain": plain,
                "compiled_fast": fast,
                "compiled_fast_xla": fast_xla,
            },
            "speedup": {
                "plain_vs_naive": naive / plain,
                "fast_vs_naive": naive / fast,
                "fast_xla_vs_naive": naive / fast_xla,
                "fast_vs_plain": plain / fast,
            },
            "fast_equals_plain": same,
        },
    )


if __name__ == "__main__":
    app.run(main)
