"""The on-disk format of a dataset's codes, the prior's training data (arXiv:1711.00937, section 3.3).

`training.export_codes_lib` writes it with a trained VQ-VAE; `read_codes` reads it back.

Layout of ``WORKDIR/codes/``::

    meta.json                                  code grid shape, num_embeddings, counts, source
    train-00000-of-00003.tfrecord ...          tf.train.Example: codes int64 [h*w], label int64
    test-00000-of-00001.tfrecord

A model with several code grids (VQ-VAE-2) writes one feature per grid, named as the grid
(``codes_top``, ``codes_bottom``); meta.json's ``grids`` maps each name to its (h, w), and
`read_codes` then gives a dict of grids.

``latent_shape`` in meta.json is the grid the prior models (`VQVAE.prior_grid_shape`): the
VQ-VAE's (h, w), or, for residual VQ of depth Q (``depth``), (h, w*Q) with each position's Q
codes side by side in depth order; ``codes_shape`` is the VQ-VAE's own layout ((h, w) or
(h, w, Q); `VQVAE.from_prior_grid` converts).

The writer fills a temp directory beside it and renames it when complete, so a killed export
leaves no ``codes/`` that a later stage would read.
"""

from __future__ import annotations

import json
import os

import numpy as np
import tensorflow as tf

META = "meta.json"
SPLITS = ("train", "test")


class CodesError(ValueError):
    """Missing or inconsistent exported codes."""


def serialize_example(codes, label: int) -> bytes:
    """One image's codes (an array: feature ``codes``; or {grid name: array}) and label."""
    grids = codes if isinstance(codes, dict) else {"codes": codes}
    feature = {
        name: tf.train.Feature(int64_list=tf.train.Int64List(value=np.asarray(grid).reshape(-1).tolist()))
        for name, grid in grids.items()
    }
    feature["label"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def grid_shapes(meta: dict) -> dict:
    """{grid name: [h, w]} of the codes meta.json describes (one grid, ``codes``, before VQ-VAE-2)."""
    return {name: list(shape) for name, shape in (meta.get("grids") or {"codes": meta["latent_shape"]}).items()}


def as_grids(codes) -> dict:
    """`read_codes`' codes as {grid name: codes} (a single grid is ``codes``)."""
    return codes if isinstance(codes, dict) else {"codes": codes}


def shard_names(split: str, num_shards: int) -> list[str]:
    return [f"{split}-{i:05d}-of-{num_shards:05d}.tfrecord" for i in range(num_shards)]


def load_meta(codes_dir: str) -> dict:
    path = os.path.join(codes_dir, META)
    if not os.path.exists(path):
        raise CodesError(f"No exported codes in {codes_dir} ({META} missing). Run train.export_codes first.")
    with open(path) as f:
        meta = json.load(f)
    for files in meta["shards"].values():
        for name in files:
            if not os.path.exists(os.path.join(codes_dir, name)):
                raise CodesError(f"{codes_dir} is incomplete: shard {name} listed in {META} is missing.")
    return meta


def read_codes(codes_dir: str, split: str) -> tf.data.Dataset:
    """Dataset of ``(codes int32 [h,w], label int32 [])`` in export order; for several grids
    (VQ-VAE-2) ``({"codes_top": [ht,wt], "codes_bottom": [hb,wb]}, label)``."""
    meta = load_meta(codes_dir)
    if split not in meta["shards"]:
        raise CodesError(f"Split {split!r} not in {codes_dir}; available: {sorted(meta['shards'])}.")
    shapes = grid_shapes(meta)
    spec = {name: tf.io.FixedLenFeature([h * w], tf.int64) for name, (h, w) in shapes.items()}
    spec["label"] = tf.io.FixedLenFeature([], tf.int64)

    def parse(record):
        ex = tf.io.parse_single_example(record, spec)
        grids = {name: tf.reshape(tf.cast(ex[name], tf.int32), shape) for name, shape in shapes.items()}
        return (grids if "grids" in meta else grids["codes"]), tf.cast(ex["label"], tf.int32)

    files = [os.path.join(codes_dir, f) for f in meta["shards"][split]]
    return tf.data.TFRecordDataset(files).map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
