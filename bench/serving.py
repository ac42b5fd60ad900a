r"""Serving speed and memory: SavedModel `decode` latency at batch 1 and throughput at batch 64,
TFLite decoder latency per quantization against the SavedModel in the same process, and the peak
RSS of a serving process and of a training process (batch 128).

    python -m bench.serving --workdir=runs/demo [--quick] [--output=...]

Uses WORKDIR/export (from the main job).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile

import numpy as np
import tensorflow as tf
from absl import app, flags

from bench.common import machine, timeit, write_json
from vqvae_tf.serving import savedmodel, tflite
from vqvae_tf.training.workdir import Workdir

flags.DEFINE_string("workdir", None, "Workdir of the main job (with export/).", required=True)
flags.DEFINE_bool("quick", False, "Fewer repeats; skip the training-memory run.")
flags.DEFINE_string("output", None, "JSON file for the results.")
FLAGS = flags.FLAGS

SERVE_SCRIPT = """
import resource, sys, numpy as np, tensorflow as tf
m = tf.saved_model.load(sys.argv[1])
codes = tf.zeros([64, {h}, {w}], tf.int32)
for _ in range(20):
    m.signatures["decode"](codes=codes)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _peak_rss_mb(cmd, cwd=None) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900)
    if res.returncode:
        raise RuntimeError(res.stderr[-2000:])
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(after, before) / 1024.0  # ru_maxrss is in KiB on Linux


def main(argv):
    del argv
    from ai_edge_litert.interpreter import Interpreter

    export_dir = Workdir(FLAGS.workdir).export
    vqvae_dir = savedmodel.model_dir(export_dir, "vqvae")
    path = os.path.join(vqvae_dir, str(savedmodel.existing_versions(vqvae_dir)[-1]))
    model = tf.saved_model.load(path)
    decode = model.signatures["decode"]
    h, w = decode.structured_input_signature[1]["codes"].shape[1:]
    repeats = 20 if FLAGS.quick else 100
    codes1 = tf.zeros([1, h, w], tf.int32)
    codes64 = tf.constant(np.random.default_rng(0).integers(0, 8, (64, h, w)).astype(np.int32))
    sm_b1 = timeit(lambda: decode(codes=codes1)["images"].numpy(), repeats, warmup=5)
    sm_b64 = timeit(lambda: decode(codes=codes64)["images"].numpy(), max(5, repeats // 5), warmup=2)
    results = {
        "savedmodel": {"decode_latency_ms_batch1": sm_b1 * 1000, "decode_images_per_second_batch64": 64 / sm_b64},
        "tflite": {},
    }
    tfl_dir = os.path.join(export_dir, tflite.SUBDIR)
    for q, entry in tflite.read_report(export_dir)["models"].items():
        runner = Interpreter(model_path=os.path.join(tfl_dir, entry["decoder_file"])).get_signature_runner("decode")
        c1 = codes1.numpy()
        lat = timeit(lambda runner=runner, c1=c1: runner(codes=c1), repeats, warmup=5)
        results["tflite"][q] = {"decode_latency_ms_batch1": lat * 1000, "speedup_vs_savedmodel_batch1": sm_b1 / lat}
    script = SERVE_SCRIPT.format(h=h, w=w)
    results["peak_rss_mb"] = {"serving_savedmodel_decode_batch64": _peak_rss_mb([sys.executable, "-c", script, path])}
    if not FLAGS.quick:
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        scratch = tempfile.mkdtemp(prefix="bench-memory-")
        results["peak_rss_mb"]["training_fashion_mnist_batch128_200_steps"] = _peak_rss_mb(
            [
                sys.executable,
                "-m",
                "train.train_vqvae",
                f"--workdir={scratch}",
                "--config=fashion_mnist",
                "--steps=200",
                "--log_every=100",
            ],
            cwd=repo,
        )
    write_json(FLAGS.output, {"machine": machine(), "savedmodel": path, **results})


if __name__ == "__main__":
    app.run(main)
