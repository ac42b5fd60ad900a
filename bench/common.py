"""Helpers shared by the benchmarks: machine description, timing, tables."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time

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
