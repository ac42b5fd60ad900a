"""Input pipeline: dataset name + split -> `tf.data.Dataset` of (image, label).

Sources, tried in this order:

1. ``image_folder``: the user's own images in ``data_dir`` (`vqvae_tf.data.image_folder`).
2. ``fashion_mnist`` / ``mnist`` from local IDX files (`vqvae_tf.data.idx`).
3. Any TFDS image dataset through ``tfds.load`` (``mnist``, ``cifar10``, ``svhn_cropped``, ...),
   honouring ``data_dir`` / ``$TFDS_DATA_DIR``; this needs a network connection the first time.

`DataSource` holds one dataset as the stages read it (name, directory, image size, channels);
`load`, `dataset_info` and `pixel_variance` are its methods as functions. ``image_size`` and
``channels`` apply to every source (centre crop + resize, grey <-> RGB: `image_folder.fit_image`).
A new source is a module beside `idx.py` plus one branch in `DataSource.info` and `.load`.
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

from vqvae_tf.data import idx, image_folder
from vqvae_tf.data.errors import DataError
from vqvae_tf.utils import files, progress


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the rest of the pipeline needs to know about a dataset."""

    name: str
    image_shape: tuple  # (H, W, C)
    num_classes: int
    source: str  # "idx:<dir>", "tfds" or "image_folder:<dir>"
    num_examples: dict  # split -> count
    class_names: tuple = ()  # label i's name


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


def parse_image_size(value) -> tuple | None:
    """`--image_size`: None, N, "N", "H,W" or (H, W) -> (H, W) of positive ints, or None.

    Raises:
      DataError: anything else, naming the value.
    """
    if value is None or value == "":
        return None

    def integer(v):
        if isinstance(v, bool) or not isinstance(v, int | np.integer | str):
            raise ValueError(v)
        return int(v)

    try:
        items = value.replace("x", ",").split(",") if isinstance(value, str) else value
        parts = [integer(p) for p in (items if isinstance(items, list | tuple) else [items])]
    except (TypeError, ValueError):
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) <= 0:
        raise DataError(f"image_size must be N or H,W with positive integers, got {value!r}.")
    return tuple(parts)


def _check_channels(channels):
    if channels is not None and (isinstance(channels, bool) or channels not in (1, 3)):
        raise DataError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}.")
    return None if channels is None else int(channels)


@dataclasses.dataclass(frozen=True)
class DataSource:
    """One dataset as the stages read it: a name (``fashion_mnist``, ``mnist``, a TFDS name or
    ``image_folder``), where it lives, and the image size and channels every split is brought to
    (None: the data's own; for an image folder, those of its first image)."""

    name: str
    data_dir: str | None = None
    image_size: tuple | None = None  # (H, W)
    channels: int | None = None
    test_fraction: float = 0.1  # image folders without split folders
    skip_corrupt_images: bool = False  # image folders

    def __post_init__(self):
        if not self.name:
            raise DataError("A dataset name is needed (--dataset).")
        object.__setattr__(self, "image_size", parse_image_size(self.image_size))
        object.__setattr__(self, "channels", _check_channels(self.channels))
        if not 0.0 < float(self.test_fraction) < 1.0:
            raise DataError(f"test_fraction must be in (0, 1), got {self.test_fraction!r}.")
        if self.name == image_folder.NAME and not self.data_dir:
            raise DataError("--dataset=image_folder needs --data_dir=DIR, the folder of images.")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["image_size"] = list(self.image_size) if self.image_size else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DataSource":
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})

    def replace(self, **changes) -> "DataSource":
        """A copy with the changes that are not None."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def describe(self) -> str:
        return f"{self.name} ({self.data_dir})" if self.name == image_folder.NAME else self.name

    # ---- image folders

    def _folder_meta(self) -> dict:
        """The decoded cache's meta.json of this image folder (made on first use), with the
        corrupt-file policy applied."""
        return _prepared_folder(self.data_dir, self.image_size, self.channels, float(self.test_fraction))

    def _check_corrupt(self, meta: dict) -> None:
        corrupt = [f for split in meta["corrupt"].values() for f in split]
        if not corrupt:
            return
        shown = ", ".join(corrupt[:10]) + (f" and {len(corrupt) - 10} more" if len(corrupt) > 10 else "")
        if not self.skip_corrupt_images:
            raise DataError(
                f"{len(corrupt)} corrupt or truncated image(s) in {meta['root']}: {shown}. Fix or remove "
                "them, or pass --skip_corrupt_images to skip them."
            )
        _log_once(f"Skipping {len(corrupt)} corrupt image(s) in {meta['root']}: {shown}.")

    # ---- every source

    def info(self) -> DatasetInfo:
        """Shape (after `image_size` / `channels`), classes, source and split sizes. Reads no
        pixels for TFDS; decodes an image folder once (then cached)."""
        if self.name == image_folder.NAME:
            meta = self._folder_meta()
            self._check_corrupt(meta)
            counts = {s: n for s, n in meta["counts"].items()}
            names = tuple(meta["class_names"])
            return DatasetInfo(
                self.name, tuple(meta["image_shape"]), len(names), f"image_folder:{meta['root']}", counts, names
            )
        info = _native_info(self.name, self.data_dir)
        shape = self._shape_from(info.image_shape)
        if None in shape:
            raise DataError(
                f"{self.name!r} has images of varying size {info.image_shape}: pass --image_size (and --channels)."
            )
        return dataclasses.replace(info, image_shape=shape)

    def _shape_from(self, native: tuple) -> tuple:
        h, w, c = native
        return tuple(None if s is None else int(s) for s in (*(self.image_size or (h, w)), self.channels or c))

    def _resizes(self) -> bool:
        """Whether an IDX / TFDS source's images are brought to another size or channel count."""
        native = _native_info(self.name, self.data_dir).image_shape
        return self._shape_from(native) != tuple(native)

    def resolved(self) -> "DataSource":
        """This source with the image size and channels of the data filled in."""
        h, w, c = self.info().image_shape
        return dataclasses.replace(self, image_size=(h, w), channels=c)

    def load(self, split: str) -> tf.data.Dataset:
        """Unbatched ``(image float32 [H,W,C] in [0,1], label int32 [])`` of `split`, in file order.

        Raises:
          DataError: unknown name, split that does not exist, missing/corrupt files.
        """
        if self.name == image_folder.NAME:
            meta = self._folder_meta()
            self._check_corrupt(meta)
            if split not in meta["counts"]:
                raise DataError(f"Image folder {meta['root']} has a train/ folder but no {split}/ folder beside it.")
            if not meta["counts"][split]:
                raise DataError(
                    f"No image of {meta['root']} is in its {split} split (test fraction "
                    f"{self.test_fraction}); add images or change --test_fraction."
                )
            ds = image_folder.read_cache(meta, split)
        else:
            ds = _native_load(self.name, split, self.data_dir)
            if self._resizes():
                size, channels = self.image_size, self.channels
                ds = ds.map(
                    lambda x, y: (
                        tf.cast(
                            tf.round(image_folder.fit_image(tf.cast(x, tf.float32) / 255.0, size, channels) * 255.0),
                            tf.uint8,
                        ),
                        y,
                    ),
                    num_parallel_calls=tf.data.AUTOTUNE,
                    deterministic=True,
                )
        return ds.map(
            lambda image, label: (tf.cast(image, tf.float32) / 255.0, tf.cast(label, tf.int32)),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )

    def fingerprint(self) -> str:
        """Changes when the data the stages see changes (files, size, channels)."""
        if self.name == image_folder.NAME:
            return self._folder_meta()["fingerprint"]
        idx_dir = idx.find_idx_dir(self.name, self.data_dir)
        if idx_dir is not None:
            path = idx.split_file(idx_dir, "train", "images-idx3")
            st = os.stat(path)
            key = f"{self.name}|{os.path.realpath(path)}|{st.st_size}|{int(st.st_mtime)}"
        else:
            key = f"{self.name}|tfds|{self.data_dir or os.environ.get('TFDS_DATA_DIR', '')}"
        key += f"|{self.info().image_shape}"
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def pixel_variance(self) -> float:
        """Variance of all training-set pixel values in [0,1] (the paper's / Sonnet's normaliser
        of the reconstruction MSE), computed once per fingerprint and cached in memory and on disk
        (``$VQVAE_CACHE_DIR`` or ``~/.cache/vqvae_tf``)."""
        return _pixel_variance(self)


def _log_once(message: str) -> None:
    if message not in _LOGGED:
        _LOGGED.add(message)
        progress.log(message)


_LOGGED: set = set()


_scan = functools.lru_cache(maxsize=8)(image_folder.scan)  # one walk per folder and process


@functools.lru_cache(maxsize=32)
def _prepared_folder(root, image_size, channels, test_fraction) -> dict:
    folder = _scan(root, test_fraction)
    if folder.ignored:
        shown = ", ".join(folder.ignored[:5]) + (", ..." if len(folder.ignored) > 5 else "")
        _log_once(f"Ignored {len(folder.ignored)} file(s) in {folder.root} that are not images: {shown}")
    if image_size is None or channels is None:
        h, w, c = image_folder.first_image_shape(folder)
        image_size, channels = image_size or (h, w), channels or c
    meta = image_folder.prepare(folder, (*image_size, channels), test_fraction)
    return meta


def clear_caches() -> None:
    """Forgets what this process memoised about the data (after files changed under it)."""
    _scan.cache_clear()
    _prepared_folder.cache_clear()
    _pixel_variance.cache_clear()
    idx.load_arrays.cache_clear()


def _native_info(name: str, data_dir: str | None) -> DatasetInfo:
    """IDX or TFDS dataset info, before any resizing."""
    idx_dir = idx.find_idx_dir(name, data_dir)
    if idx_dir is not None:
        counts = {}
        shape = None
        for split in idx.SPLIT_PREFIX:
            if idx.split_file(idx_dir, split, "images-idx3") is not None:
                images, _ = idx.load_arrays(idx_dir, split)
                counts[split] = int(images.shape[0])
                shape = tuple(int(s) for s in images.shape[1:])
        return DatasetInfo(name, shape, idx.NUM_CLASSES, f"idx:{idx_dir}", counts, idx.CLASS_NAMES[name])
    builder = _tfds_builder(name, data_dir)
    if not builder.info.splits:  # not prepared here, and TFDS could not fetch its split sizes either
        _download_and_prepare(builder, name)
        builder = _tfds_builder(name, data_dir)
    features = builder.info.features
    if "image" not in features:
        raise DataError(f"TFDS dataset {name!r} has no 'image' feature; it is not an image dataset.")
    shape = tuple(features["image"].shape)  # None where the size varies: DataSource.info checks
    has_label = "label" in features
    num_classes = features["label"].num_classes if has_label else 0
    names = tuple(features["label"].names) if has_label else ()
    counts = {k: int(v.num_examples) for k, v in builder.info.splits.items()}
    return DatasetInfo(name, shape, num_classes, "tfds", counts, names)


def _download_and_prepare(builder, name: str) -> None:
    """Downloads and prepares a TFDS dataset (as tfds.load would); DataError if that fails, e.g.
    on a machine without internet access."""
    try:
        builder.download_and_prepare()
    except Exception as e:
        raise DataError(
            f"TFDS dataset {name!r} is not prepared in {builder.data_dir} and could not be downloaded "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). Without internet access, "
            "prepare it on a connected machine and copy its TFDS data directory (--data_dir), or train on "
            "local files: fashion_mnist / mnist IDX files, or a folder of images (--dataset=image_folder --data_dir=DIR)."
        ) from e


def _native_load(name: str, split: str, data_dir: str | None) -> tf.data.Dataset:
    """(image uint8, label int32) of an IDX or TFDS dataset."""
    idx_dir = idx.find_idx_dir(name, data_dir)
    if idx_dir is not None:
        _check_split(name, split, idx.SPLIT_PREFIX)
        images, labels = idx.load_arrays(idx_dir, split)
        return tf.data.Dataset.from_tensor_slices((images, labels))
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
    return ds.map(
        lambda ex: (ex["image"], tf.cast(ex["label"], tf.int32) if has_label else tf.constant(-1)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )


def dataset_info(name: str, data_dir: str | None = None, **options) -> DatasetInfo:
    """`DataSource(name, data_dir, **options).info()`: shape, classes, source and split sizes."""
    return DataSource(name, data_dir, **options).info()


def load(name: str, split: str, data_dir: str | None = None, **options) -> tf.data.Dataset:
    """Returns an unbatched `tf.data.Dataset` of ``(image, label)``.

    Args:
      name: ``fashion_mnist``, ``mnist``, ``image_folder`` or any TFDS image dataset name.
      split: ``train`` or ``test`` (TFDS datasets also accept their own split names).
      data_dir: directory with IDX files, a TFDS data dir, or the image folder; None uses the
        defaults above.
      **options: ``image_size`` (N or (H, W)), ``channels`` (1 or 3), ``test_fraction`` and
        ``skip_corrupt_images`` (image folders): see `DataSource`.

    Returns:
      Dataset of ``image: float32 [H,W,C] in [0,1]``, ``label: int32 []``, in file order.

    Raises:
      DataError: unknown name, split that does not exist, missing/corrupt files, bad options.
    """
    return DataSource(name, data_dir, **options).load(split)


def batched(
    ds: tf.data.Dataset,
    batch_size: int,
    training: bool,
    seed: int | None = None,
    shuffle_buffer: int | None = None,
    repeat: bool | None = None,
) -> tf.data.Dataset:
    """Batches a dataset from `load` for training (shuffled, repeated, full batches only) or
    evaluation (file order, one pass, last partial batch kept), with prefetching. The shuffle
    buffer defaults to 10,000 images, fewer for large images (about 1 GiB of float32 pixels, at
    least 1,000 images)."""
    if batch_size <= 0:
        raise DataError(f"batch_size must be positive, got {batch_size}.")
    repeat = training if repeat is None else repeat
    if training:
        if shuffle_buffer is None:
            image_bytes = 4 * int(np.prod([d or 1 for d in ds.element_spec[0].shape]))
            shuffle_buffer = int(min(10_000, max(1_000, 2**30 // max(image_bytes, 1))))
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=training, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


@functools.lru_cache(maxsize=16)
def _pixel_variance(source: DataSource) -> float:
    if source.name == image_folder.NAME:
        meta = source._folder_meta()
        if "pixel_variance" not in meta:
            raise DataError(f"Image folder {source.data_dir} has no training images that decode.")
        return float(meta["pixel_variance"])
    cache_path = os.path.join(files.cache_dir(), f"variance-{source.name}-{source.fingerprint()}.json")
    try:
        with open(cache_path) as f:
            return float(json.load(f)["variance"])
    except (OSError, ValueError, KeyError):
        pass
    idx_dir = idx.find_idx_dir(source.name, source.data_dir)
    if idx_dir is not None and not source._resizes():
        images, _ = idx.load_arrays(idx_dir, "train")
        variance = float((images.astype(np.float64) / 255.0).var())
    else:
        total = total_sq = count = 0.0
        for images, _ in source.load("train").batch(1024).as_numpy_iterator():
            x = images.astype(np.float64)
            total += x.sum()
            total_sq += (x * x).sum()
            count += x.size
        if count == 0:
            raise DataError(f"Dataset {source.name!r} has an empty train split.")
        mean = total / count
        variance = total_sq / count - mean * mean
    files.atomic_write_text(cache_path, json.dumps({"variance": variance, "dataset": source.name}))
    return variance


def pixel_variance(name: str, data_dir: str | None = None, **options) -> float:
    """`DataSource(name, data_dir, **options).pixel_variance()`."""
    return DataSource(name, data_dir, **options).pixel_variance()
