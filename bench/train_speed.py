r"""VQ-VAE train_step speed: images/s and achieved FLOP/s as a fraction of this process's
measured large-matmul FLOP/s, with jit_compile off and on.

    python -m bench.train_speed [--quick] [--output=bench_results/train_speed.json]
"""

from __future__ import annotations

import time

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

from bench.common import machine, write_json
from vqvae_tf import get_config

flags.DEFINE_bool("quick", False, "Fewer steps.")
flags.DEFINE_string("output", None, "JSON file for the results.")
flags.DEFINE_multi_string("preset", ["fashion_mnist", "cifar10"], "Configs to measure.")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
FLAGS = flags.FLAGS


def matmul_flops_per_second(n: int = 2048, repeats: int = 5, trials: int = 5) -> float:
    """Best of `trials` timings of `repeats` float32 n x n matmuls: the machine's attainable
    FLOP/s in this process (best-of, because a shared machine only ever slows a trial down)."""
    a = tf.random.normal([n, n])
    b = tf.random.normal([n, n])
    f = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    f().numpy()
    best = 0.0
    for _ in range(trials):
        start = time.perf_counter()
        for _ in range(repeats):
            f().numpy()
        best = max(best, 2 * n**3 * repeats / (time.perf_counter() - start))
    return best


def step_flops(model, images) -> float:
    """FLOPs of one forward + backward pass (the TF profiler's float_operation count)."""

    @tf.function
    def grads(x):
        with tf.GradientTape() as tape:
            loss = model.compute_losses(x, training=False)["loss"]
        return tape.gradient(loss, model.trainable_variables)

    graph = grads.get_concrete_function(tf.TensorSpec(images.shape, tf.float32)).graph
    opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    return float(tf.compat.v1.profiler.profile(graph, options=opts).total_float_ops)


def measure(preset: str, batch: int, jit: bool, steps: int) -> dict:
    config = get_config(preset)
    keras.utils.set_random_seed(0)
    model = config.build(data_variance=0.1)
    model.compile(optimizer=keras.optimizers.Adam(1e-4))
    images = tf.constant(np.random.default_rng(0).uniform(size=(batch,) + config.image_shape).astype(np.float32))
    step = tf.function(model.train_step, jit_compile=jit)
    for _ in range(3):
        step(images)
    start = time.perf_counter()
    for _ in range(steps):
        logs = step(images)
    float(logs["loss"])
    seconds = (time.perf_counter() - start) / steps
    return {
        "preset": preset,
        "jit_compile": jit,
        "batch": batch,
        "seconds_per_step": seconds,
        "images_per_second": batch / seconds,
        "flops_per_step": step_flops(model, images),
    }


def main(argv):
    del argv
    steps = 10 if FLAGS.quick else 40
    peak = matmul_flops_per_second(trials=3 if FLAGS.quick else 8)
    rows = []
    for preset in FLAGS.preset:
        for jit in (False, True):
            r = measure(preset, FLAGS.batch_size, jit, steps)
            r["achieved_flops_per_second"] = r["flops_per_step"] / r["seconds_per_step"]
            r["fraction_of_matmul_peak"] = r["achieved_flops_per_second"] / peak
            rows.append(r)
    for preset in FLAGS.preset:
        off, on = [r for r in rows if r["preset"] == preset]
        on["speedup_vs_no_jit"] = on["images_per_second"] / off["images_per_second"]
    write_json(FLAGS.output, {"machine": machine(), "matmul_flops_per_second": peak, "steps": steps, "results": rows})


if __name__ == "__main__":
    app.run(main)
