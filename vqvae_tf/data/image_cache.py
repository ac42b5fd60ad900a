"""The decoded cache of an image folder (`image_files` scans and decodes it).

The decoded images (uint8) are written once per folder *fingerprint* (relative paths, sizes and
modification times of the files, image size, channels, test fraction) to TFRecord shards under
``$VQVAE_CACHE_DIR/image_folder/<fingerprint>/`` with the training pixel variance (`prepare`);
later loads read those shards (`read_cache`), and hold a split in memory when it fits
(`memory_budget_bytes`). Each cache is written to a temporary directory and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import tensorflow as tf

from vqvae_tf.data import large_images
from vqvae_tf.data.image_files import NAME, Scan, decode, fit_image, in_test_split
from vqvae_tf.utils import files, progress

# Bump when the cache's format or the decoding changes: old caches are then not read.
CACHE_VERSION = 2  # 2: files over large_images.LARGE_PIXELS decoded at reduced size
_RECORD_IMAGES = 256  # images per TFRecord record in the cache
_SHARD_BYTES = 512 * 2**20  # pixels per cache shard file, at most about


def cache_root() -> str:
    return os.path.join(files.cache_dir(), NAME)


def memory_budget_bytes() -> int:
    """Largest split (uint8 pixels) held in memory: $VQVAE_MEMORY_CACHE_BYTES, else a quarter of
    the machine's memory, at most 8 GiB."""
    if os.environ.get("VQVAE_MEMORY_CACHE_BYTES"):
        return int(os.environ["VQVAE_MEMORY_CACHE_BYTES"])
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 * 2**30
    return min(8 * 2**30, total // 4)


def fingerprint(folder: Scan, image_shape: tuple, test_fraction: float) -> str:
    key = {
        "version": CACHE_VERSION,
        "root": folder.root,
        "layout": folder.layout,
        "image_shape": list(image_shape),
        "test_fraction": test_fraction if folder.layout == "hash" else None,
        "files": [list(s) for s in folder.stats],
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


def _decode_pass(folder: Scan, split: str, image_shape: tuple):
    """Yields (indices, uint8 images, labels) batches of `split`, decoded in parallel (a very large
    file one at a time, at reduced size: `large_images`); the images that fail to decode are
    missing from the indices."""
    entries = folder.files.get(split, [])
    kinds = [large_images.kind_of(os.path.join(folder.root, rel)) for rel, _ in entries]
    kept = [i for i, kind in enumerate(kinds) if kind != "too_large"]  # (the others: corrupt)
    paths = [os.path.join(folder.root, entries[i][0]) for i in kept]
    labels = np.array([entries[i][1] for i in kept], np.int32)
    large = np.array([kinds[i] == "large" for i in kept], bool)
    h, w, c = image_shape

    def load(path, big):
        def reduced():
            image = tf.numpy_function(large_images.decode_reduced, [path, h, w], tf.uint8, stateful=False)
            image = fit_image(tf.cast(tf.ensure_shape(image, [None, None, None]), tf.float32) / 255.0, (h, w), c)
            return tf.cast(tf.round(image * 255.0), tf.uint8)

        return tf.cond(big, reduced, lambda: decode(path, (h, w), c))

    # (tf.constant: an empty list of paths is still a string tensor)
    ds = tf.data.Dataset.from_tensor_slices(
        (np.array(kept, np.int64), tf.constant(paths, tf.string, shape=[len(paths)]), labels, large)
    )
    ds = ds.map(lambda i, p, y, big: (i, load(p, big), y), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.ignore_errors().batch(_RECORD_IMAGES).prefetch(2)
    yield from ds.as_numpy_iterator()


def _record(images: np.ndarray, labels: np.ndarray) -> bytes:
    return tf.train.Example(
        features=tf.train.Features(
            feature={
                "images": tf.train.Feature(bytes_list=tf.train.BytesList(value=[images.tobytes()])),
                "labels": tf.train.Feature(int64_list=tf.train.Int64List(value=labels.tolist())),
            }
        )
    ).SerializeToString()


def prepare(folder: Scan, image_shape: tuple, test_fraction: float) -> dict:
    """The cache of `folder` at `image_shape`: made (one decoding pass per split) unless it exists.
    Returns its meta.json: counts, corrupt files per split, train pixel variance, shards."""
    key = fingerprint(folder, image_shape, test_fraction)
    directory = os.path.join(cache_root(), key)
    meta_path = os.path.join(directory, "meta.json")
    try:
        with open(meta_path) as f:
            return json.load(f)
    except (OSError, ValueError):
        pass
    total = sum(len(v) for v in folder.files.values())
    progress.log(
        f"Decoding {total} images of {folder.root} to {image_shape[0]}x{image_shape[1]}x{image_shape[2]} "
        f"(once for these files; cache {directory})..."
    )
    meta = {
        "fingerprint": key,
        "root": folder.root,
        "layout": folder.layout,
        "image_shape": list(image_shape),
        "class_names": list(folder.class_names),
        "counts": {},
        "corrupt": {},
        "shards": {},
    }
    per_shard = max(1, _SHARD_BYTES // (int(np.prod(image_shape)) * _RECORD_IMAGES))  # records per shard
    with files.atomic_directory(directory, overwrite=True) as tmp:
        for split in folder.files:
            entries = folder.files[split]
            kept, total_sum, total_sq, records, writer, shards = [], 0.0, 0.0, 0, None, []
            try:
                for indices, images, labels in _decode_pass(folder, split, image_shape):
                    if records % per_shard == 0:
                        if writer:
                            writer.close()
                        shards.append(f"{split}-{len(shards):05d}.tfrecord")
                        writer = tf.io.TFRecordWriter(os.path.join(tmp, shards[-1]))
                    writer.write(_record(images, labels))
                    records += 1
                    kept.append(indices)
                    if split == "train":
                        x = images.astype(np.float64) / 255.0
                        total_sum += float(x.sum())
                        total_sq += float(np.square(x).sum())
            finally:
                if writer:
                    writer.close()
            kept = np.concatenate(kept) if kept else np.zeros([0], np.int64)
            lost = np.setdiff1d(np.arange(len(entries)), kept)
            meta["counts"][split] = int(len(kept))
            meta["shards"][split] = shards
            meta["corrupt"][split] = sorted(
                [entries[i][0] for i in lost]
                + [r for r in folder.corrupt_names if _split_of(folder, r, test_fraction) == split]
            )
            if split == "train" and len(kept):
                n = len(kept) * float(np.prod(image_shape))
                mean = total_sum / n
                meta["pixel_variance"] = total_sq / n - mean * mean
        files.atomic_write_json(os.path.join(tmp, "meta.json"), meta)
    return meta


def _split_of(folder: Scan, relpath: str, test_fraction: float) -> str:
    if folder.layout == "splits":
        return relpath.split("/", 1)[0]
    return "test" if in_test_split(relpath, test_fraction) else "train"


def read_cache(meta: dict, split: str) -> tf.data.Dataset:
    """(image uint8 [H,W,C], label int32) of `split` from the cache, in file order; held in memory
    when the split fits `memory_budget_bytes`."""
    h, w, c = meta["image_shape"]
    directory = os.path.join(cache_root(), meta["fingerprint"])
    paths = [os.path.join(directory, s) for s in meta["shards"][split]]
    spec = {
        "images": tf.io.FixedLenFeature([], tf.string),
        "labels": tf.io.VarLenFeature(tf.int64),
    }

    def parse(record):
        ex = tf.io.parse_single_example(record, spec)
        images = tf.reshape(tf.io.decode_raw(ex["images"], tf.uint8), [-1, h, w, c])
        return images, tf.cast(tf.sparse.to_dense(ex["labels"]), tf.int32)

    ds = tf.data.TFRecordDataset(paths).map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).unbatch()
    if meta["counts"][split] * h * w * c <= memory_budget_bytes():
        ds = ds.cache()
    return ds
