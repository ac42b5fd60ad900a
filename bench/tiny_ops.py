r"""What one op costs on the tiny operands of the cached sampler, inside a `tf.while_loop` (as in the
sampler and its SavedModel signature): microseconds per loop iteration for a 2-D MatMul, an
einsum and a batched matmul of the same product, a 1x1 convolution, and an empty body, at batch 1
and 64, with TensorFlow's oneDNN rewrites on (the default) and off (`TF_ENABLE_ONEDNN_OPTS=0`, read
at import, so each setting runs in its own process).

    python -m bench.tiny_ops [--iterations=1000] [--output=...]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from absl import app, flags

from bench.common import machine, write_json

flags.DEFINE_integer("iterations", 1000, "Loop iterations per timing.")
flags.DEFINE_string("output", None, "JSON file for the results.")
flags.DEFINE_bool("worker", False, "Internal: time the ops in this process and print JSON.")
FLAGS = flags.FLAGS

F = 32  # the default prior's filters; the products are [N, F] x [F, 2F] as in a gated block


def worker() -> dict:
    import tensorflow as tf

    from bench.common import timeit

    rows = {}
    kernel = tf.random.stateless_normal([F, 2 * F], seed=[0, 2]) / F
    ops = {
        "empty body": lambda a: a,
        "MatMul (2-D)": lambda a: tf.matmul(a, kernel)[:, :F],
        "Einsum": lambda a: tf.einsum("nf,fd->nd", a, kernel)[:, :F],
        "BatchMatMulV2": lambda a: tf.matmul(a[None], kernel[None])[0, :, :F],
        "Conv2D 1x1": lambda a: tf.nn.conv2d(a[:, None, None], kernel[None, None], 1, "VALID")[:, 0, 0, :F],
    }
    for n in (1, 64):
        x = tf.random.stateless_normal([n, F], seed=[0, 1])
        for name, op in ops.items():

            @tf.function
            def loop(a, op=op):
                body = lambda i, a: (i + 1, op(a) * 0.5)  # noqa: E731
                return tf.while_loop(lambda i, a: i < FLAGS.iterations, body, [0, a])[1]

            seconds = timeit(lambda loop=loop, x=x: loop(x).numpy(), repeats=5)
            rows.setdefault(f"batch_{n}", {})[name] = seconds / FLAGS.iterations * 1e6
    return rows


def main(argv):
    del argv
    if FLAGS.worker:
        print(json.dumps(worker()))
        return
    results = {}
    for setting, value in (("onednn_on", "1"), ("onednn_off", "0")):
        env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=value, TF_CPP_MIN_LOG_LEVEL="2")
        out = subprocess.run(
            [sys.executable, "-m", "bench.tiny_ops", "--worker", f"--iterations={FLAGS.iterations}"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        results[setting] = json.loads(out.strip().splitlines()[-1])
    write_json(FLAGS.output, {"machine": machine(), "unit": "microseconds per loop iteration", "results": results})


if __name__ == "__main__":
    app.run(main)
