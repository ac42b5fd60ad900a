"""Input pipeline: dataset name + split -> `tf.data.Dataset` of (image, label).

Sources, tried in this order:

1. ``fashion_mnist`` / ``mnist`` from local IDX files (`vqvae_tf.data.idx`).
2. Any TFDS image dataset through ``tfds.load`` (``mnist``, ``cifar10``, ``svhn_cropped``, ...),
   honouring ``data_dir`` / ``$TFDS_DATA_DIR``; this needs a network connection the first time.

A new source is a module beside `idx.py` plus one branch in `dataset_info` and `load`.
Images are float32 ``[H, W, C]`` in ``[0, 1]``; labels are int32 (``-1`` where a dataset has none).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os

import numpy as np
import tensorflow as tf

from vqvae_tf.data import idx
from vqvae_tf.data.errors import DataError
from vqvae_tf.utils import files


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the rest of the pipeline needs to know about a dataset."""

    name: str
    image_shape: tuple  # (H, W, C)
    num_classes: int
    source: str  # "idx:<dir>" or "tfds"
    num_examples: dict  # split -> count


def _check_split(name: str, split: str, available) -> None:
    if split not in available:
        raise DataError(f"Split {split!r} does not exist for dataset {name!r}; available: {sorted(available)}.")


# --------------------------------------------------------------------------------------------
# TFDS


def _tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:  # importlib_resources is an undeclared need of tfds 4.9.10
        raise DataError(f"tensorflow_datasets cannot be imported ({e}); pip install -r requirements.txt") from e
    return tfds


def _tfds_builder(name: str, data_dir: str | None):
    tfds = _tfds()
    try:
        return tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # DatasetNotFoundError and friends
        raise DataError(
            f"Unknown dataset {name!r}: neither local IDX files ({', '.join(idx.IDX_DATASETS)}) "
            f"nor a TFDS dataset of that name ({type(e).__name__}: {str(e).splitlines()[0]})."
        ) from e


# --------------------------------------------------------------------------------------------
# Public API


def dataset_info(name: str, data_dir: str | None = None) -> DatasetInfo:
    """Shape, class count, source and split sizes of `name` (reads no pixels for TFDS)."""
    idx_dir = idx.find_idx_dir(name, data_dir)
    if idx_dir is not None:
        counts = {}
        shape = None
        for split in idx.SPLIT_PREFIX:
            if idx.split_file(idx_dir, split, "images-idx3") is not None:
                images, _ = idx.load_arrays(idx_dir, split)
                counts[split] = int(images.shape[0])
                shape = tuple(int(s) for s in images.shape[1:])
        return DatasetInfo(name, shape, idx.NUM_CLASSES, f"idx:{idx_dir}", counts)
    builder = _tfds_builder(name, data_dir)
    features = builder.info.features
    if "image" not in features:
        raise DataError(f"TFDS dataset {name!r} has no 'image' feature; it is not an image dataset.")
    shape = tuple(features["image"].shape)
    if None in shape:
        raise DataError(f"TFDS dataset {name!r} has images of varying size {shape}; resize it first.")
    num_classes = features["label"].num_classes if "label" in features else 0
    counts = {k: int(v.num_examples) for k, v in builder.info.splits.items()}
    return DatasetInfo(name, shape, num_classes, "tfds", counts)


def load(name: str, split: str, data_dir: str | None = None) -> tf.data.Dataset:
    """Returns an unbatched `tf.data.Dataset` of ``(image, label)``.

    Args:
      name: ``fashion_mnist``, ``mnist`` or any TFDS image dataset name.
      split: ``train`` or ``test`` (TFDS datasets also accept their own split names).
      data_dir: directory with IDX files or a TFDS data dir; None uses the defaults above.

    Returns:
      Dataset of ``image: float32 [H,W,C] in [0,1]``, ``label: int32 []``, in file order.

    Raises:
      DataError: unknown name, split that does not exist, missing/corrupt files.
    """
    idx_dir = idx.find_idx_dir(name, data_dir)
    if idx_dir is not None:
        _check_split(name, split, idx.SPLIT_PREFIX)
        images, labels = idx.load_arrays(idx_dir, split)
        ds = tf.data.Dataset.from_tensor_slices((images, labels))
    else:
        builder = _tfds_builder(name, data_dir)
        if builder.info.splits:  # known once prepared; before that tfds.load reports bad splits
            _check_split(name, split, builder.info.splits.keys())
        tfds = _tfds()
        try:
            ds = tfds.load(name, split=split, data_dir=data_dir, shuffle_files=False)
        except Exception as e:
            hint = idx.missing_message(name, data_dir) if name in idx.IDX_DATASETS else ""
            raise DataError(f"tfds.load({name!r}, split={split!r}) failed: {e}. {hint}") from e
        has_label = "label" in builder.info.features
        ds = ds.map(
            lambda ex: (ex["image"], tf.cast(ex["label"], tf.int32) if has_label else tf.constant(-1)),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    return ds.map(
        lambda image, label: (tf.cast(image, tf.float32) / 255.0, tf.cast(label, tf.int32)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )


def batched(
    ds: tf.data.Dataset,
    batch_size: int,
    training: bool,
    seed: int | None = None,
    shuffle_buffer: int = 10_000,
    repeat: bool | None = None,
) -> tf.data.Dataset:
    """Batches a dataset from `load` for training (shuffled, repeated, full batches only) or
    evaluation (file order, one pass, last partial batch kept), with prefetching."""
    if batch_size <= 0:
        raise DataError(f"batch_size must be positive, got {batch_size}.")
    repeat = training if repeat is None else repeat
    if training:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=training, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def _cache_dir() -> str:
    return os.environ.get("VQVAE_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "vqvae_tf")


def _fingerprint(name: str, data_dir: str | None) -> str:
    idx_dir = idx.find_idx_dir(name, data_dir)
    if idx_dir is not None:
        path = idx.split_file(idx_dir, "train", "images-idx3")
        st = os.stat(path)
        key = f"{name}|{os.path.realpath(path)}|{st.st_size}|{int(st.st_mtime)}"
    else:
        key = f"{name}|tfds|{data_dir or os.environ.get('TFDS_DATA_DIR', '')}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=16)
def pixel_variance(name: str, data_dir: str | None = None) -> float:
    """Variance of all training-set pixel values in [0,1] (the paper's / Sonnet's normaliser of
    the reconstruction MSE). Computed once, then cached in memory and on disk
    (``$VQVAE_CACHE_DIR`` or ``~/.cache/vqvae_tf``)."""
    cache_path = os.path.join(_cache_dir(), f"variance-{name}-{_fingerprint(name, data_dir)}.json")
    try:
        with open(cache_path) as f:
            return float(json.load(f)["variance"])
    except (OSError, ValueError, KeyError):
        pass
    idx_dir = idx.find_idx_dir(name, data_dir)
    if idx_dir is not None:
        images, _ = idx.load_arrays(idx_dir, "train")
        x = images.astype(np.float64) / 255.0
        variance = float(x.var())
    else:
        total = total_sq = count = 0.0
        for images, _ in load(name, "train", data_dir).batch(1024).as_numpy_iterator():
            x = images.astype(np.float64)
            total += x.sum()
            total_sq += (x * x).sum()
            count += x.size
        if count == 0:
            raise DataError(f"Dataset {name!r} has an empty train split.")
        mean = total / count
        variance = total_sq / count - mean * mean
    files.atomic_write_text(cache_path, json.dumps({"variance": variance, "dataset": name}))
    return variance
