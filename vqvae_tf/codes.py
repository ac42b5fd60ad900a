"""Codes of a whole dataset, exported for training the prior (arXiv:1711.00937, section 3.3).

Layout of ``WORKDIR/codes/``::

    meta.json                                  code grid shape, num_embeddings, counts, source
    train-00000-of-00003.tfrecord ...          tf.train.Example: codes int64 [h*w], label int64
    test-00000-of-00001.tfrecord

The directory is written into a temp directory beside it and renamed when complete, so a
killed export leaves no ``codes/`` that a later stage would read.
"""

from __future__ import annotations

import json
import math
import os
import time

import numpy as np
import tensorflow as tf

from vqvae_tf import data, io_utils

META = "meta.json"
SPLITS = ("train", "test")


class CodesError(ValueError):
    """Missing or inconsistent exported codes."""


def _example(codes: np.ndarray, label: int) -> bytes:
    return tf.train.Example(
        features=tf.train.Features(
            feature={
                "codes": tf.train.Feature(int64_list=tf.train.Int64List(value=codes.reshape(-1).tolist())),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
            }
        )
    ).SerializeToString()


def export_codes(
    model,
    dataset: str,
    out_dir: str,
    data_dir: str | None = None,
    source_checkpoint: str | None = None,
    batch_size: int = 500,
    shard_size: int = 25_000,
    overwrite: bool = True,
    log=print,
) -> dict:
    """Encodes the train and test splits of `dataset` with `model` (a `VQVAE`) into `out_dir`.

    Returns the metadata written to meta.json. Deterministic: file order, no shuffling.
    """
    if batch_size <= 0 or shard_size <= 0:
        raise ValueError(f"batch_size and shard_size must be positive, got {batch_size}, {shard_size}.")
    info = data.dataset_info(dataset, data_dir)
    encode = tf.function(model.encode)
    counts = {}
    start = time.time()
    with io_utils.atomic_directory(out_dir, overwrite=overwrite) as tmp:
        for split in SPLITS:
            total = info.num_examples.get(split)
            num_shards = max(1, math.ceil((total or 1) / shard_size))
            writers, written = None, 0
            shard_paths = [
                os.path.join(tmp, f"{split}-{i:05d}-of-{num_shards:05d}.tfrecord") for i in range(num_shards)
            ]
            try:
                writers = [tf.io.TFRecordWriter(p) for p in shard_paths]
                for images, labels in data.batched(data.load(dataset, split, data_dir), batch_size, training=False):
                    codes = encode(images).numpy()
                    for c, y in zip(codes, labels.numpy()):
                        writers[min(written // shard_size, num_shards - 1)].write(_example(c, y))
                        written += 1
                    if written % (20 * batch_size) < batch_size:
                        log(f"[export_codes] {split}: {written}/{total or '?'} images ({time.time() - start:.0f}s)")
            finally:
                for w in writers or []:
                    w.close()
            counts[split] = written
        meta = {
            "latent_shape": list(model.latent_shape),
            "num_embeddings": int(model.num_embeddings),
            "image_shape": list(model.image_shape),
            "num_classes": int(info.num_classes),
            "dataset": dataset,
            "counts": counts,
            "shards": {s: sorted(f for f in os.listdir(tmp) if f.startswith(s + "-")) for s in SPLITS},
            "source_checkpoint": source_checkpoint,
        }
        io_utils.atomic_write_json(os.path.join(tmp, META), meta)
    log(f"[export_codes] wrote {counts} codes to {out_dir} in {time.time() - start:.0f}s")
    return meta


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
    """Dataset of ``(codes int32 [h,w], label int32 [])`` in export order."""
    meta = load_meta(codes_dir)
    if split not in meta["shards"]:
        raise CodesError(f"Split {split!r} not in {codes_dir}; available: {sorted(meta['shards'])}.")
    h, w = meta["latent_shape"]
    spec = {
        "codes": tf.io.FixedLenFeature([h * w], tf.int64),
        "label": tf.io.FixedLenFeature([], tf.int64),
    }

    def parse(record):
        ex = tf.io.parse_single_example(record, spec)
        return tf.reshape(tf.cast(ex["codes"], tf.int32), [h, w]), tf.cast(ex["label"], tf.int32)

    files = [os.path.join(codes_dir, f) for f in meta["shards"][split]]
    return tf.data.TFRecordDataset(files).map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
