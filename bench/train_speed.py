r"""VQ-VAE train_step speed: images/s and achieved FLOP/s as a fraction of this process's
measured large-matmul FLOP/s, with jit_compile off and on.

    python -m bench.train_speed [--quick] [--output=bench_results/train_speed.json]
"""

from __future__ import annotations

from absl import app, flags

from bench.common import machine, matmul_flops_per_second, measure_train_step, write_json

flags.DEFINE_bool("quick", False, "Fewer steps.")
flags.DEFINE_string("output", None, "JSON file for the results.")
flags.DEFINE_multi_string("preset", ["fashion_mnist", "cifar10"], "Configs to measure.")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    steps = 10 if FLAGS.quick else 40
    peak = matmul_flops_per_second(trials=3 if FLAGS.quick else 8)
    rows = []
    for preset in FLAGS.preset:
        for jit in (False, True):
            r = measure_train_step(preset, FLAGS.batch_size, jit, steps)
            r["achieved_flops_per_second"] = r["flops_per_step"] / r["seconds_per_step"]
            r["fraction_of_matmul_peak"] = r["achieved_flops_per_second"] / peak
            rows.append(r)
    for preset in FLAGS.preset:
        off, on = [r for r in rows if r["preset"] == preset]
        on["speedup_vs_no_jit"] = on["images_per_second"] / off["images_per_second"]
    write_json(FLAGS.output, {"machine": machine(), "matmul_flops_per_second": peak, "steps": steps, "results": rows})


if __name__ == "__main__":
    app.run(main)
