"""Pretrained presets of a workdir's trained models (the pipeline writes them to ``W/presets/``).

Each preset directory is `vqvae_tf.models.presets`' format. Its metadata.json records where the
model came from: the data and its fingerprint, the steps, the command and commit that made it,
the test metrics of the run, and *check metrics* on a fixed subset of the test split (the first
`CHECK_EXAMPLES` images). A shipped preset's test recomputes those and compares.
"""

from __future__ import annotations

import datetime
import os
import subprocess

import numpy as np
import tensorflow as tf

from vqvae_tf import data
from vqvae_tf.data import codes
from vqvae_tf.models import presets
from vqvae_tf.training import train_prior_lib, train_vqvae_lib
from vqvae_tf.training.workdir import Workdir
from vqvae_tf.utils import progress

# The check metrics' subset: the first CHECK_EXAMPLES test images, CHECK_EXAMPLES_LARGE for images
# over 32x32 (tests recompute them from the image files: decoding is their cost).
CHECK_EXAMPLES = 1000
CHECK_EXAMPLES_LARGE = 256
LICENSES = {
    "clipart": "Public domain, as the openclipart.org clip art the weights are trained on (Debian openclipart-png)",
    "fashion_mnist": "MIT, as the Fashion-MNIST data the weights are trained on (Zalando Research)",
    "mnist": "CC BY-SA 3.0, as the MNIST data the weights are trained on",
}


def git_commit(path: str | None = None) -> str | None:
    """The commit of the repository holding `path` (this package by default), '+dirty' when the
    tree has changes; None outside a git checkout."""
    cwd = path or os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def check_examples(image_shape) -> int:
    """How many test images (and their codes) the check metrics of a model of `image_shape` use."""
    return CHECK_EXAMPLES if image_shape[0] * image_shape[1] <= 32 * 32 else CHECK_EXAMPLES_LARGE


def vqvae_check_metrics(model, source: data.DataSource, examples: int | None = None) -> dict:
    """normalized MSE, perplexity and LPIPS (VGG, where it applies) of `model` on the first
    `examples` (`check_examples`) test images of `source`."""
    return vqvae_check_on(model, source.load("test").take(examples or check_examples(model.image_shape)))


def vqvae_check_on(model, images_and_labels) -> dict:
    """`vqvae_check_metrics` of a dataset of (image, label) (images as `DataSource.load` gives them)."""
    m = train_vqvae_lib.evaluate(model, data.batched(images_and_labels, 500, training=False))
    extra = {k: m[k] for k in ("perplexity", "perplexity_top", "perplexity_bottom", "test_lpips") if k in m}
    return {"examples": m["test_examples"], "test_normalized_mse": m["test_normalized_mse"], **extra}


def prior_check_metrics(prior, codes_dir: str, examples: int = CHECK_EXAMPLES) -> dict:
    """Bits per code of `prior` on the first `examples` test codes of `codes_dir` (MaskGIT: its
    masked-token NLL in bits, masks of seed (0, 1) per batch of 500)."""
    return prior_check_on(prior, codes.read_codes(codes_dir, "test").take(examples))


def prior_check_on(prior, codes_and_labels) -> dict:
    """`prior_check_metrics` of a dataset of (codes, label) (`codes.read_codes`' or encoded grids),
    read once: the examples are the grids scored."""
    if not prior.exact_likelihood:
        labels = (lambda y: y) if prior.num_classes else (lambda y: None)
        nats = np.concatenate([prior.masked_nll(c, labels(y)).numpy() for c, y in codes_and_labels.batch(500)])
        return {"examples": len(nats), "test_masked_bits_per_code": float(nats.mean() / np.log(2))}
    bits = _bits_per_grid(prior, codes_and_labels)
    return {"examples": len(bits), "test_bits_per_code": float(bits.mean())}


def prior_bits_per_code(prior, codes_and_labels) -> float:
    """Mean bits per code of `prior` over a dataset of (codes, labels) (`codes.read_codes`')."""
    return float(_bits_per_grid(prior, codes_and_labels).mean())


def _bits_per_grid(prior, codes_and_labels) -> np.ndarray:
    return np.concatenate(
        [
            prior.bits_per_code(prior.log_prob_grids(codes.as_grids(c), y if prior.num_classes else None)).numpy()
            for c, y in codes_and_labels.batch(500)
        ]
    )


def export_presets_stage(workdir: str, out_dir: str | None = None, command: str | None = None) -> dict:
    """Writes ``out_dir`` (default ``W/presets``)/vqvae and /prior (when a prior is trained) from
    the workdir's latest checkpoints, unless presets of those checkpoints are there already.
    Returns {kind: directory}."""
    w = Workdir(workdir)
    out_dir = out_dir or w.presets
    model, checkpoint = train_vqvae_lib.load_trained_model_and_path(workdir)
    sources = {"vqvae": os.path.basename(checkpoint)}
    if w.prior.exists():
        sources["prior"] = os.path.basename(tf.train.latest_checkpoint(w.prior.checkpoints) or "")
    existing = {}
    for kind in sources:
        try:
            existing[kind] = presets.read_metadata(os.path.join(out_dir, kind), kind).get("checkpoint")
        except presets.PresetError:
            pass
    if existing == sources:
        progress.log(f"Presets of these checkpoints exist already in {out_dir}; skipping.")
        return {kind: os.path.join(out_dir, kind) for kind in sources}
    source = train_vqvae_lib.trained_data_source(workdir)
    examples = check_examples(model.image_shape)
    record = w.vqvae.read_config()
    vq_metrics = w.vqvae.read_metrics() or {}
    common = {
        "command": command,
        "commit": git_commit(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "license": LICENSES.get(source.name, "the license of the data the weights are trained on"),
        "data": source.to_dict(),
        "data_fingerprint": record.get("data_fingerprint"),
        "image_shape": list(model.image_shape),
    }
    vq_meta = dict(
        common,
        checkpoint=sources["vqvae"],
        steps=vq_metrics.get("steps"),
        code_grids={name: list(shape) for name, shape in model.code_grids.items()},
        **({"latent_shape": list(model.latent_shape)} if hasattr(model, "latent_shape") else {}),
        num_embeddings=int(model.num_embeddings),
        test_metrics={k: vq_metrics.get(k) for k in train_vqvae_lib.quality_keys(vq_metrics) + ("test_examples",)},
        check_metrics=vqvae_check_metrics(model, source, examples),
    )
    paths = {"vqvae": presets.save(model, os.path.join(out_dir, "vqvae"), vq_meta)}
    if w.prior.exists():
        prior = train_prior_lib.load_trained_prior(workdir)
        codes_meta = codes.load_meta(w.codes)
        prior_metrics = w.prior.read_metrics() or {}
        prior_meta = dict(
            common,
            checkpoint=sources["prior"],
            steps=prior_metrics.get("steps"),
            grids=codes.grid_shapes(codes_meta),
            **({"latent_shape": codes_meta["latent_shape"]} if "latent_shape" in codes_meta else {}),
            num_embeddings=codes_meta["num_embeddings"],
            num_classes=int(prior.num_classes),
            class_names=codes_meta.get("class_names") if prior.num_classes else [],
            class_counts=codes_meta.get("class_counts") if prior.num_classes else [],
            test_metrics={k: v for k, v in prior_metrics.items() if k != "bits_per_dim_note"},
            check_metrics=prior_check_metrics(prior, w.codes, examples),
        )
        paths["prior"] = presets.save(prior, os.path.join(out_dir, "prior"), prior_meta)
    progress.log(f"Wrote presets {', '.join(paths.values())}")
    return paths
