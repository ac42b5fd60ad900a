r"""Training speed side by side: our cifar10 VQ-VAE `train_step` against a PyTorch model of the
same architecture (`bench.torch_vqvae`), batch 128 of 32x32x3, on the CPU, with the same number of
threads, in alternating fresh processes (so neither framework's thread pool idles beside the
other's), several rounds. Also TF's measured matmul rate, the fraction of it our step achieves, and
our step with XLA.

    pip install -r bench/requirements-torch.txt      # torch, for this benchmark only
    python -m bench.train_vs_torch [--rounds=3] [--steps=20] [--output=...]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from absl import app, flags

from bench.common import machine, write_json

flags.DEFINE_integer("rounds", 3, "Alternating rounds.")
flags.DEFINE_integer("steps", 20, "Timed steps per measurement (after 3 warm-up steps).")
flags.DEFINE_integer("threads", 2, "Threads for both frameworks (intra-op; TF's inter-op too).")
flags.DEFINE_string("output", None, "JSON file for the results.")
flags.DEFINE_enum("worker", None, ["tf", "tf_jit"], "Internal: measure our step in this process and print JSON.")
FLAGS = flags.FLAGS


def tf_worker(jit: bool) -> dict:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
    tf.config.threading.set_inter_op_parallelism_threads(FLAGS.threads)
    from bench.common import matmul_flops_per_second, measure_train_step

    row = measure_train_step("cifar10", 128, jit, FLAGS.steps)
    row["matmul_flops_per_second"] = matmul_flops_per_second(trials=3)
    row["fraction_of_matmul_peak"] = row["flops_per_step"] / row["seconds_per_step"] / row["matmul_flops_per_second"]
    return row


def run_worker(kind: str) -> dict:
    args = [f"--threads={FLAGS.threads}", f"--steps={FLAGS.steps}"]
    module = ["bench.torch_vqvae"] if kind == "torch" else ["bench.train_vs_torch", f"--worker={kind}"]
    cmd = [sys.executable, "-m", *module, *args]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv):
    del argv
    if FLAGS.worker:
        print(json.dumps(tf_worker(FLAGS.worker == "tf_jit")))
        return
    rounds = []
    for r in range(FLAGS.rounds):
        row = {kind: run_worker(kind) for kind in ("tf", "torch", "tf_jit")}
        row["tf_vs_torch"] = row["tf"]["images_per_second"] / row["torch"]["images_per_second"]
        row["tf_jit_vs_torch"] = row["tf_jit"]["images_per_second"] / row["torch"]["images_per_second"]
        print(
            f"round {r + 1}: tf {row['tf']['images_per_second']:.0f} img/s "
            f"({row['tf']['fraction_of_matmul_peak']:.2f} of matmul), tf+xla {row['tf_jit']['images_per_second']:.0f}, "
            f"torch {row['torch']['images_per_second']:.0f}: {row['tf_vs_torch']:.2f}x",
            flush=True,
        )
        rounds.append(row)
    write_json(FLAGS.output, {"machine": machine(), "threads": FLAGS.threads, "steps": FLAGS.steps, "rounds": rounds})


if __name__ == "__main__":
    app.run(main)
