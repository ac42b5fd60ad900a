"""The checks of the prior SavedModel's sampling inputs, shared by `serving_default` and
`sample_xla` (whose compiled sampler has lost its own Assert ops to XLA)."""

from __future__ import annotations

import tensorflow as tf

from vqvae_tf.utils import checks

MAX_SAMPLES = 256  # samples per call
MAX_STEPS = 256  # MaskGIT's decoding steps per call (each a full pass of the network)


def check_sample_inputs(prior, inputs: dict) -> dict:
    """The sampling signatures' inputs (`sample_inputs`), each behind a check that fails with
    InvalidArgumentError naming it: num_samples in [1, MAX_SAMPLES], temperature finite and > 0,
    steps in [1, MAX_STEPS], labels one per sample in [0, num_classes)."""
    out = dict(inputs)
    n = inputs["num_samples"]
    out["num_samples"] = checks.require(
        n, tf.logical_and(n >= 1, n <= MAX_SAMPLES), f"num_samples must be in [1, {MAX_SAMPLES}], got", n
    )
    t = inputs["temperature"]
    out["temperature"] = checks.require(
        t, tf.logical_and(t > 0, tf.math.is_finite(t)), "temperature must be finite and > 0, got", t
    )
    if "steps" in inputs:
        steps = inputs["steps"]
        out["steps"] = checks.require(
            steps, tf.logical_and(steps >= 1, steps <= MAX_STEPS), f"steps must be in [1, {MAX_STEPS}], got", steps
        )
    if "labels" in inputs:
        labels = checks.require(
            inputs["labels"],
            tf.equal(tf.size(inputs["labels"]), n),
            "labels must be one per sample: got",
            tf.size(inputs["labels"]),
            "for num_samples",
            n,
        )
        out["labels"] = checks.in_range(labels, 0, prior.num_classes, "labels")
    return out
