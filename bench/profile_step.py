r"""Where a training step's time goes: the TF profiler's framework op stats of our VQ-VAE
`train_step` (a fixed random batch, after warm-up steps), summed by op type, as shares of the
profiled time (IDLE: no op running on the profiled threads). The profiler slows the step down;
read the shares, not the absolute times.

    python -m bench.profile_step [--config=cifar10] [--batch_size=128] [--steps=3] [--output=...]
"""

from __future__ import annotations

import collections
import glob
import json
import tempfile

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

from bench.common import machine, write_json
from vqvae_tf import get_config

flags.DEFINE_string("config", "cifar10", "VQ-VAE config whose train step is profiled.")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_integer("steps", 3, "Profiled steps (after 3 warm-up steps).")
flags.DEFINE_integer("top", 15, "Op types listed.")
flags.DEFINE_string("output", None, "JSON file for the results.")
FLAGS = flags.FLAGS


def op_type_times(logdir: str) -> dict:
    """{op type: total self time in us} of the newest trace under `logdir`."""
    from tensorflow.python.profiler.internal import _pywrap_profiler_plugin as plugin

    path = sorted(glob.glob(f"{logdir}/plugins/profile/*/*.xplane.pb"))[-1]
    data, _ = plugin.xspace_to_tools_data([path], "framework_op_stats")
    table = json.loads(data)[0]
    columns = [c["id"] for c in table["cols"]]
    times = collections.Counter()
    for row in table["rows"]:
        values = dict(zip(columns, [c["v"] if c else None for c in row["c"]]))
        times[values["type"]] += values["total_self_time"]
    return dict(times)


def main(argv):
    del argv
    config = get_config(FLAGS.config)
    keras.utils.set_random_seed(0)
    model = config.build(data_variance=0.1)
    model.compile(optimizer=keras.optimizers.Adam(1e-4))
    shape = (FLAGS.batch_size, *config.image_shape)
    images = tf.constant(np.random.default_rng(0).uniform(size=shape).astype(np.float32))
    step = tf.function(model.train_step)
    for _ in range(3):
        float(step(images)["loss"])
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        for _ in range(FLAGS.steps):
            float(step(images)["loss"])
        tf.profiler.experimental.stop()
        times = op_type_times(logdir)
    total = sum(times.values())
    top = sorted(times.items(), key=lambda kv: -kv[1])[: FLAGS.top]
    write_json(
        FLAGS.output,
        {
            "machine": machine(),
            "config": FLAGS.config,
            "batch_size": FLAGS.batch_size,
            "share_of_profiled_time": {name: t / total for name, t in top},
            "convolutions_share": sum(t for name, t in times.items() if "Conv2D" in name) / total,
        },
    )


if __name__ == "__main__":
    app.run(main)
