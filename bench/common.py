"""Helpers shared by the benchmarks: machine description, timing, tables."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time

import keras
import numpy as np
import tensorflow as tf

from vqvae_tf import data, get_config
from vqvae_tf.utils import files


def machine() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import tensorflow as tf

    gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    return {"cpu": cpu, "cores": os.cpu_count(), "gpu": gpus or "none", "tensorflow": tf.__version__}


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB: /proc's VmHWM (getrusage's ru_maxrss survives exec
    on Linux, so a worker process would report its parent's peak)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def timeit(fn, repeats: int, warmup: int = 1) -> float:
    """Median seconds per call of fn() after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def write_json(path: str | None, obj) -> None:
    """Prints `obj` as JSON and, with a path, writes it there atomically."""
    text = json.dumps(obj, indent=2, default=str)
    print(text)
    if path:
        files.atomic_write_text(path, text + "\n")


def classifier(epochs: int, seed: int = 0) -> tuple[keras.Model, float]:
    """An independent Fashion-MNIST classifier (a small CNN, nothing shared with the library),
    trained on the real training split: (model on 28x28x1 images, its real test accuracy)."""
    keras.utils.set_random_seed(seed)
    x, y = next(iter(data.load("fashion_mnist", "train").batch(60000)))
    xt, yt = next(iter(data.load("fashion_mnist", "test").batch(10000)))
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x, y, batch_size=128, epochs=epochs, verbose=0)
    return model, float(model.evaluate(xt, yt, verbose=0)[1])


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


def measure_train_step(preset: str, batch: int, jit: bool, steps: int) -> dict:
    """Our `train_step` of config `preset` on a fixed random batch: seconds, images/s, FLOPs."""
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


def vqvae_and_codes(config, options) -> dict:
    """Trains the VQ-VAE of `config` in `options.workdir` unless it finished there already, exports
    its codes (skipped when up to date) and returns its metrics.json."""
    from vqvae_tf.training import export_codes_lib, train_vqvae_lib
    from vqvae_tf.training.workdir import Workdir

    w = Workdir(options.workdir)
    if not w.vqvae.trained_to(config.steps):
        train_vqvae_lib.train_and_evaluate(config, options)
    export_codes_lib.export_codes_stage(options.workdir)
    return w.vqvae.read_metrics()
