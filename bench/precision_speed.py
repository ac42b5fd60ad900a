r"""float32 against mixed_bfloat16 for the plain and the VQGAN train step, side by side in one process.

    python -m bench.precision_speed [--rounds=2] [--steps=20] [--output=...]

The cifar10 config (32x32x3, batch 128): its own loss, and with the VQGAN losses (L1, LPIPS-alex,
PatchGAN of 3 layers acting from step 0). Each (step, policy) is built once (a throwaway model on a
fixed random batch), then the rounds alternate float32 and bf16, `--steps` timed steps each after
two compiling ones; the best round counts (a shared machine only ever slows a round down). What
`--mixed_precision=auto` decides is this comparison for the run's own config, in 5 interleaved rounds of
3 steps, on the median speed-up (`training.precision.decide`).
"""

from __future__ import annotations

import time

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

from bench.common import machine, write_json
from vqvae_tf import get_config
from vqvae_tf.training import precision, train_vqvae_lib

flags.DEFINE_integer("rounds", 2, "Alternating rounds per (step, policy).")
flags.DEFINE_integer("steps", 20, "Timed steps per round.")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_string("output", None, "JSON file for the results.")
FLAGS = flags.FLAGS
GAN = dict(reconstruction_loss="l1", perceptual_weight=1.0, perceptual_net="alex", adversarial_weight=0.8)


def _step(gan: bool, policy: str):
    config = get_config("cifar10")
    if gan:
        for k, v in GAN.items():
            setattr(config, k, v)
    keras.mixed_precision.set_global_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        model = train_vqvae_lib.build_vqvae(config.validate(), 0.06, 0, for_training=True)
        step = tf.function(model.train_step)
        batch = tf.constant(np.random.default_rng(0).uniform(size=(FLAGS.batch_size, 32, 32, 3)).astype(np.float32))
        for _ in range(2):
            step(batch)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return step, batch


def main(argv):
    del argv
    steps = {(gan, p): _step(gan, p) for gan in (False, True) for p in ("float32", "mixed_bfloat16")}
    rates = {k: [] for k in steps}
    for _ in range(FLAGS.rounds):
        for key, (step, batch) in steps.items():
            start = time.perf_counter()
            for _ in range(FLAGS.steps):
                logs = step(batch)
            float(logs["loss"])
            rates[key].append(FLAGS.steps * FLAGS.batch_size / (time.perf_counter() - start))
    rows = []
    for gan in (False, True):
        f32, bf16 = max(rates[(gan, "float32")]), max(rates[(gan, "mixed_bfloat16")])
        rows.append(
            {
                "step": "VQGAN losses" if gan else "plain",
                "float32_images_per_second": f32,
                "bf16_images_per_second": bf16,
                "bf16_speedup": bf16 / f32,
                "rounds": {p: rates[(gan, p)] for p in ("float32", "mixed_bfloat16")},
            }
        )
    write_json(
        FLAGS.output,
        {"machine": machine(), "cpu_bf16_flag": precision.cpu_bf16_flag(), "batch": FLAGS.batch_size, "results": rows},
    )


if __name__ == "__main__":
    app.run(main)
