"""Helpers shared by the benchmarks: machine description, timing, tables."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time

import keras

from vqvae_tf import data
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
