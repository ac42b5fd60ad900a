r"""float32 against mixed_bfloat16 train steps, interleaved, and the noise of `--mixed_precision=auto`'s probe.

    python -m bench.precision_speed [--configs=fashion_mnist,cifar10] [--rounds=9] [--steps=10]
        [--probe_repeats=10] [--gan] [--output=...]

1. Steady state: for each config, a float32 step, a mixed_bfloat16 step and a second float32 step
   (the control) are built once (throwaway models on a fixed random batch of the config's shape,
   two compiling steps each); then `--rounds` rounds time `--steps` steps of each, the order
   rotating per round (A B C, B C A, ...). Reported: median images/s and the range over rounds,
   and the median and range of the per-round ratios bf16/float32 and float32/float32 (the control
   says how far two identical steps differ on this machine).
2. The probe's own noise: `training.precision.probe`'s schedule (ROUNDS interleaved rounds of
   BLOCK_STEPS steps) on float32 against float32, `--probe_repeats` times per config. The largest
   median it returns is the speed-up a machine with no real gain can show; `MIN_SPEEDUP` must be
   above it. The rule (`precision.decide`) is applied to each repeat with the real bf16 step too.
`--gan` adds the VQGAN losses (L1, LPIPS-alex, PatchGAN of 3 layers acting from step 0).
"""

from __future__ import annotations

import statistics
import time

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

from bench.common import machine, write_json
from vqvae_tf import get_config
from vqvae_tf.training import precision, train_vqvae_lib

flags.DEFINE_list("configs", ["fashion_mnist", "cifar10"], "Named VQ-VAE configs to time.")
flags.DEFINE_integer("rounds", 9, "Interleaved rounds of the steady-state comparison.")
flags.DEFINE_integer("steps", 10, "Timed steps per policy per round.")
flags.DEFINE_integer("probe_repeats", 10, "Repeats of the probe's schedule per config (0: skip part 2).")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_bool("gan", False, "Add the VQGAN losses to each config.")
flags.DEFINE_string("output", None, "JSON file for the results.")
FLAGS = flags.FLAGS
GAN = dict(reconstruction_loss="l1", perceptual_weight=1.0, perceptual_net="alex", adversarial_weight=0.8)
POLICIES = ("float32", "mixed_bfloat16", "float32 (control)")


def _run_step(name: str, policy: str):
    config = get_config(name)
    if FLAGS.gan:
        for k, v in GAN.items():
            setattr(config, k, v)
    shape = (FLAGS.batch_size, *config.image_shape)
    batch = tf.constant(np.random.default_rng(0).uniform(size=shape).astype(np.float32))
    keras.utils.set_random_seed(0)
    build = lambda: train_vqvae_lib.build_vqvae(config.validate(), 0.06, 0, for_training=True)  # noqa: E731
    return precision._compiled_step(build, batch, policy.split()[0])


def _median_range(values) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def steady_state(name: str) -> dict:
    steps = {policy: _run_step(name, policy) for policy in POLICIES}
    seconds = {policy: [] for policy in POLICIES}
    for policy in POLICIES:  # an untimed round: the first steps after compiling run slow
        for _ in range(FLAGS.steps):
            steps[policy]()
    for r in range(FLAGS.rounds):
        order = POLICIES[r % 3 :] + POLICIES[: r % 3]
        for policy in order:
            start = time.perf_counter()
            for _ in range(FLAGS.steps):
                steps[policy]()
            seconds[policy].append(time.perf_counter() - start)
    images = FLAGS.steps * FLAGS.batch_size
    f32, bf16, control = (seconds[p] for p in POLICIES)
    row = {
        "config": name,
        "images_per_second": {p: _median_range([images / s for s in seconds[p]]) for p in POLICIES},
        "bf16_speedup": _median_range([a / b for a, b in zip(f32, bf16)]),
        "control_ratio": _median_range([a / b for a, b in zip(f32, control)]),
    }
    print(
        f"{name}: float32 {row['images_per_second']['float32']['median']:.0f} img/s, bf16 "
        f"{row['images_per_second']['mixed_bfloat16']['median']:.0f} img/s, bf16 speed-up median "
        f"{row['bf16_speedup']['median']:.2f}x ({row['bf16_speedup']['min']:.2f}-{row['bf16_speedup']['max']:.2f}), "
        f"float32/float32 {row['control_ratio']['median']:.2f}x ({row['control_ratio']['min']:.2f}-"
        f"{row['control_ratio']['max']:.2f})",
        flush=True,
    )
    if FLAGS.probe_repeats:
        row["probe"] = probe_noise(steps)
    return row


def _probe_medians(run_a, run_b) -> list[float]:
    """The medians `precision.decide` computes, over `--probe_repeats` runs of the probe's schedule."""
    medians = []
    for _ in range(FLAGS.probe_repeats):
        times = {"a": [], "b": []}
        for r in range(precision.ROUNDS):
            for key in ("a", "b") if r % 2 == 0 else ("b", "a"):
                times[key].append(precision._block_seconds(run_a if key == "a" else run_b))
        medians.append(statistics.median(a / b for a, b in zip(times["a"], times["b"])))
    return medians


def probe_noise(steps) -> dict:
    """The probe's medians on float32 against float32 and, where the CPU has bf16 instructions (else
    `auto` keeps float32 without probing), against mixed_bfloat16."""
    null = _probe_medians(steps["float32"], steps["float32 (control)"])
    result = {
        "schedule": f"{precision.ROUNDS} rounds x {precision.BLOCK_STEPS} steps",
        "float32_vs_float32_medians": null,
        "control_chosen_by_rule": sum(m >= precision.MIN_SPEEDUP for m in null),
    }
    line = f"  probe x{FLAGS.probe_repeats}: float32 vs float32 medians {min(null):.3f}-{max(null):.3f}"
    if precision.cpu_bf16_flag():
        real = _probe_medians(steps["float32"], steps["mixed_bfloat16"])
        result["float32_vs_bf16_medians"] = real
        result["bf16_chosen_by_rule"] = sum(m >= precision.MIN_SPEEDUP for m in real)
        line += f"; float32 vs bf16 medians {min(real):.3f}-{max(real):.3f}"
    print(line, flush=True)
    return result


def main(argv):
    del argv
    rows = [steady_state(name) for name in FLAGS.configs]
    write_json(
        FLAGS.output,
        {
            "machine": machine(),
            "cpu_bf16_flag": precision.cpu_bf16_flag(),
            "batch": FLAGS.batch_size,
            "steps_per_round": FLAGS.steps,
            "rounds": FLAGS.rounds,
            "gan": FLAGS.gan,
            "min_speedup": precision.MIN_SPEEDUP,
            "results": rows,
        },
    )


if __name__ == "__main__":
    app.run(main)
