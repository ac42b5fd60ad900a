r"""Sampling speed of the three priors on large code grids, through their SavedModels.

32x32 code grids (the imagenet128 VQ-VAE's: 128x128x3 images, downsample 4, its K),
class-conditional (10 classes); each prior of its own config: PixelCNN the "imagenet128" prior
config (128 filters, 5x5, its stack sized to reach the grid), the transformer and MaskGIT theirs
(width 128, 4 blocks); MaskGIT at 8 steps. Speed does not depend on the weights: freshly
initialised models. Each prior is exported with --xla_sampler and loaded with
`tf.saved_model.load`, as TF Serving would; `serving_default` (portable) and `sample_xla` are timed
at batch 1 and 64 (codes and decoded images; the decoder is the same for all three): batch 1 the
best of 3 rounds of 3-call medians, batch 64 one call after a warmup call. FLOPs per grid: the TF profiler's count of one full forward pass, times the
passes a sampler needs (PixelCNN's and the transformer's caches: about one pass; MaskGIT: one per
step).

    python -m bench.prior_speed --output=bench/results/prior_speed.json [--quick]
"""

from __future__ import annotations

import tempfile

import numpy as np
import tensorflow as tf
from absl import app, flags

from bench.common import machine, timeit, write_json
from vqvae_tf import configs, get_config
from vqvae_tf.models import priors
from vqvae_tf.serving import savedmodel

flags.DEFINE_string("output", None, "JSON file for the results.")
flags.DEFINE_bool("quick", False, "One round, batch 1 only, 16x16 grids (a smoke run).")
flags.DEFINE_list("priors", ["pixelcnn", "transformer", "maskgit"], "Networks to time.")
FLAGS = flags.FLAGS
CONFIGS = {"pixelcnn": "imagenet128", "transformer": "transformer", "maskgit": "maskgit"}
CLASSES, STEPS = 10, 8


def build(network: str, grid, num_embeddings: int):
    config = configs.get_prior_config(CONFIGS[network])
    fields = {name: getattr(config, name) for name in priors.NETWORK_FIELDS}
    fields.update(num_embeddings=num_embeddings, num_classes=CLASSES)
    meta = {
        "format_version": 2,
        "prior_family": "pixelcnn",
        "latent_shape": list(grid),
        "num_embeddings": num_embeddings,
    }
    return priors.get(network).build(fields, meta)


def forward_flops(prior, grid) -> float:
    """FLOPs of one full forward pass over one grid (the TF profiler's float_operation count)."""
    codes = tf.TensorSpec([1, *grid], tf.int32)
    labels = tf.TensorSpec([1], tf.int32)
    if prior.prior_network == "maskgit":
        fn = tf.function(lambda c, y: prior(c, tf.zeros_like(c, tf.bool), y))
    else:
        fn = tf.function(lambda c, y: prior(c, y))
    graph = fn.get_concrete_function(codes, labels).graph
    opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    return float(tf.compat.v1.profiler.profile(graph, options=opts).total_float_ops)


def main(argv):
    del argv
    vqvae = get_config("imagenet128" if not FLAGS.quick else "vqvae_64").build()
    grid = tuple(vqvae.code_grids["codes"])
    batches = (1,) if FLAGS.quick else (1, 64)
    rounds = 1 if FLAGS.quick else 3
    results = {"machine": machine(), "grid": list(grid), "num_embeddings": vqvae.num_embeddings, "priors": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for network in FLAGS.priors:
            prior = build(network, grid, vqvae.num_embeddings)
            passes = STEPS if network == "maskgit" else 1
            row = {
                "parameters": int(prior.count_params()),
                "gflops_per_grid": forward_flops(prior, grid) * passes / 1e9,
                "ms_per_sample": {},
            }
            path = savedmodel.export_prior(prior, vqvae, f"{tmp}/{network}", xla_sampler=True)
            sigs = tf.saved_model.load(path).signatures
            for n in batches:
                inputs = dict(
                    num_samples=tf.constant(n),
                    temperature=tf.constant(1.0),
                    seed=tf.constant(1),
                    labels=tf.constant(np.arange(n) % CLASSES, tf.int32),
                )
                if network == "maskgit":
                    inputs["steps"] = tf.constant(STEPS)
                for name in ("serving_default", "sample_xla"):
                    run = lambda name=name, inputs=inputs, sigs=sigs: sigs[name](**inputs)["images"].numpy()  # noqa: E731
                    # timeit's warmup call traces / compiles; batch 64: one timed call (tens of seconds)
                    seconds = min(timeit(run, 3) for _ in range(rounds)) if n == 1 else timeit(run, 1)
                    row["ms_per_sample"][f"{name}_batch_{n}"] = seconds / n * 1000
            results["priors"][network] = row
            print(network, row, flush=True)
            write_json(FLAGS.output, results)
    table = results["priors"]
    if "pixelcnn" in table and "maskgit" in table:
        for key in table["maskgit"]["ms_per_sample"]:
            results.setdefault("maskgit_speedup_vs_pixelcnn", {})[key] = (
                table["pixelcnn"]["ms_per_sample"][key] / table["maskgit"]["ms_per_sample"][key]
            )
    write_json(FLAGS.output, results)


if __name__ == "__main__":
    app.run(main)
