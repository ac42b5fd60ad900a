r"""Large codebooks (issue #41): the quantizers at K = 16,384 on clip art, one network, one budget.

Each variant trains the `clipart_64` network (64x64x3 -> 16x16 codes; only the quantizer and K
differ) on Debian's openclipart-png with the `clipart` recipe's schedule shortened to `--steps`:
L1 alone, then L1 + LPIPS-VGG for the last 15% of the steps (as clipart_64's 8,500 of 10,000), with
the library's own stage (`train_vqvae_lib.train_and_evaluate`: held-out PSNR, SSIM, LPIPS, code
usage = the fraction of the K codes that the 778 held-out images use, perplexity, training
images/s). Each variant runs in a process of its own (its peak RSS is its own); runs live in
`--workdir/<variant>/` and resume, so a comparison may span several sessions.

    python -m bench.large_codebooks --workdir=runs/bench_k16k                      # every variant
    python -m bench.large_codebooks --workdir=runs/bench_k16k --only=simvq_16k,ibq_16k --steps=2000
    python -m bench.large_codebooks --memory                                       # peak RSS of training steps

`--memory` runs `--memory_steps` training steps at batch 32 of each K = 16,384 variant twice, each
in its own process: as shipped (scores in blocks of rows, at most 2048 restart candidates a step)
and as the code was before (the whole [N, K] matrix; K restart candidates), and reports both
processes' peak RSS and step time (the first step, with k-means, untimed).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K = 16_384
# name -> the clipart_64 config fields that differ (it is an EMA codebook with k-means init and
# dead-code restart, K = 256, D = 64).
VARIANTS = {
    "vq_16k": dict(quantizer="vq", kmeans_init=False, dead_code_threshold=0.0, num_embeddings=K),
    "ema_restart_16k": dict(num_embeddings=K),
    "rotation_16k": dict(num_embeddings=K, gradient="rotation"),
    "simvq_16k": dict(quantizer="simvq", num_embeddings=K),
    "ibq_16k": dict(quantizer="ibq", num_embeddings=K),
    "lfq_14": dict(quantizer="lfq", embedding_dim=14, num_embeddings=K),
    "fsq_8_8_8_6_5": dict(quantizer="fsq", fsq_levels=(8, 8, 8, 6, 5)),  # 15,360 codes (the FSQ paper's ~2^14)
    # K = 256 at the same budget: the figures the K = 16,384 rows are held against.
    "ema_restart_256": dict(),
    "vq_256": dict(quantizer="vq", kmeans_init=False, dead_code_threshold=0.0),
    "simvq_256": dict(quantizer="simvq"),
    "ibq_256": dict(quantizer="ibq"),
}
KEYS = (
    "num_embeddings",
    "code_bits_per_image",
    "codebook_usage",
    "perplexity",
    "test_psnr",
    "test_ssim",
    "test_lpips",
    "images_per_second",
    "steps",
)

flags.DEFINE_string("workdir", "runs/bench_large_codebooks", "Directory of the runs (one subdirectory per variant).")
flags.DEFINE_list("only", None, f"Variants to run (default: all): {', '.join(VARIANTS)}.")
flags.DEFINE_integer("steps", 2000, "Training steps per variant (the last 15% with LPIPS).")
flags.DEFINE_bool("quick", False, "40 steps per variant (the last 6 with LPIPS): a smoke run.")
flags.DEFINE_bool("memory", False, "Only measure peak RSS of training steps, blocked against the whole matrix.")
flags.DEFINE_integer("memory_steps", 5, "Training steps per --memory process.")
flags.DEFINE_string("worker", None, "(internal) run one variant in this process.")
flags.DEFINE_bool("whole", False, "(internal, --memory) turn the blocking off.")
flags.DEFINE_string("output", None, "JSON file for the results (default: --workdir/large_codebooks.json).")
FLAGS = flags.FLAGS


def variant_config(name: str, steps: int):
    from vqvae_tf import configs

    config = dataclasses.replace(configs.get_config("clipart_64"), **VARIANTS[name])
    return dataclasses.replace(config, steps=steps, perceptual_start=steps - max(1, steps * 15 // 100)).validate()


def worker_train(name: str, steps: int) -> dict:
    from vqvae_tf.training import train_vqvae_lib
    from vqvae_tf.training.options import RunOptions
    from vqvae_tf.training.workdir import Workdir

    config = variant_config(name, steps)
    options = RunOptions(os.path.join(FLAGS.workdir, name), log_every=100, checkpoint_every=250)
    w = Workdir(options.workdir)
    start = time.time()
    if not w.vqvae.trained_to(steps):
        train_vqvae_lib.train_and_evaluate(config, options)
    metrics = w.vqvae.read_metrics()
    return {"variant": name, **{k: metrics.get(k) for k in KEYS}, "seconds_this_process": round(time.time() - start)}


def worker_memory(name: str, steps: int, whole: bool) -> dict:
    import numpy as np
    import tensorflow as tf

    from vqvae_tf.layers.quantizers import ibq, lfq, ops, upkeep

    if whole:  # the code before issue #41: whole [N, K] matrices, K restart candidates a step
        for module in (ops, ibq, lfq):
            module.BLOCKED_FROM_K = 1 << 30
        upkeep.CodebookUpkeep.MAX_RESTART_CANDIDATES = 1 << 30
    config = variant_config(name, 1000)
    config.perceptual_weight = 0.0  # (the quantizer's memory, not LPIPS-VGG's)
    model = config.build(data_variance=0.06)
    model.compile(optimizer=config.make_optimizer())
    images = tf.constant(np.random.default_rng(0).uniform(size=(config.batch_size, 64, 64, 3)).astype(np.float32))
    step = tf.function(model.train_step)
    step(images)
    start = time.perf_counter()
    for _ in range(steps):
        logs = step(images)
    float(logs["loss"])
    return {"variant": name, "whole_matrix": whole, "ms_per_step": round((time.perf_counter() - start) * 1000 / steps)}


def spawn(*args: str) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": REPO}
    cmd = [sys.executable, "-m", "bench.large_codebooks", *args]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stderr[-3000:]}")
    sys.stderr.write("".join(line + "\n" for line in res.stderr.splitlines() if "step" in line)[-2000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv):
    del argv
    from bench.common import machine, peak_rss_mb, write_json

    steps = 40 if FLAGS.quick else FLAGS.steps
    if FLAGS.worker:
        if FLAGS.memory:
            result = worker_memory(FLAGS.worker, FLAGS.memory_steps, FLAGS.whole)
        else:
            result = worker_train(FLAGS.worker, steps)
        print(json.dumps({**result, "peak_rss_mb": round(peak_rss_mb())}))
        return
    names = FLAGS.only or [n for n in VARIANTS if not FLAGS.memory or n.endswith(("_16k", "_14", "_5"))]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        raise app.UsageError(f"Unknown variants {unknown}; known: {', '.join(VARIANTS)}.")
    rows = []
    for name in names:
        if FLAGS.memory:
            for whole in (False, True):
                memory = ("--memory", f"--memory_steps={FLAGS.memory_steps}", f"--{'' if whole else 'no'}whole")
                rows.append(spawn(f"--worker={name}", *memory))
                print(json.dumps(rows[-1]), flush=True)
        else:
            rows.append(spawn(f"--worker={name}", f"--workdir={os.path.abspath(FLAGS.workdir)}", f"--steps={steps}"))
            print("| " + " | ".join(str(rows[-1].get(k)) for k in ("variant", *KEYS, "peak_rss_mb")) + " |", flush=True)
    name = "large_codebooks_memory.json" if FLAGS.memory else "large_codebooks.json"
    write_json(
        FLAGS.output or os.path.join(FLAGS.workdir, name), {"machine": machine(), "steps": steps, "results": rows}
    )


if __name__ == "__main__":
    app.run(main)
