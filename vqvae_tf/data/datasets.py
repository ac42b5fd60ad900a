"""Input pipeline: a `DataSource` (dataset name + where + image size) -> `tf.data.Dataset` of
(image, label).

Where the images come from is a backend's business (`vqvae_tf.data.sources`: one per file, asked
in order): ``image_folder`` (the user's own images in ``data_dir``), ``fashion_mnist`` / ``mnist``
from local IDX files, and any other name through TFDS (``cifar10``, ``svhn_cropped``, ...;
honours ``data_dir`` / ``$TFDS_DATA_DIR`` and needs a network the first time). What every source
gets is done here once: ``image_size`` and ``channels`` (centre crop + resize, grey <-> RGB:
`image_files.fit_image`), scaling to [0, 1], the fingerprint and the pixel-variance cache.
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

from vqvae_tf.data import idx_files, image_files, sources
from vqvae_tf.data.errors import DataError
from vqvae_tf.data.sources.base import DatasetInfo
from vqvae_tf.utils import files

__all__ = ["DataSource", "DatasetInfo", "batched", "clear_caches", "dataset_info", "load", "pixel_variance"]


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
    (None: the data's own; for an image folder, those of its first image). Its fields are the data
    flags (`cli.define_data_flags`: ``name`` is ``--dataset``); a field's ``metadata["help"]`` is
    the flag's help. The backend that serves it is `backend` (`vqvae_tf.data.sources`).

    A source without a name (``DataSource(data_dir=...)``) stands for "the config's dataset" in
    `RunOptions`; `named(default)` fills it in. Only a named source reads data."""

    name: str | None = dataclasses.field(
        default=None,
        metadata={"flag": "dataset", "help": "Dataset: fashion_mnist, mnist, image_folder or a TFDS name."},
    )
    data_dir: str | None = dataclasses.field(
        default=None,
        metadata={
            "help": "The image folder (--dataset=image_folder), a directory with IDX files, or a TFDS data_dir "
            "(default: $VQVAE_DATA_DIR, then /usr/share/datasets/fashion-mnist, then TFDS's default)."
        },
    )
    image_size: tuple | None = dataclasses.field(
        default=None,
        metadata={"help": "Resize (centre crop to the aspect ratio) to N or H,W pixels (default: the data's)."},
    )
    channels: int | None = dataclasses.field(
        default=None, metadata={"help": "1: grey, 3: RGB (default: the data's).", "choices": ("1", "3")}
    )
    test_fraction: float = dataclasses.field(
        default=0.1,
        metadata={"help": "Image folders without train/ and test/: the held-out fraction (by file path hash)."},
    )
    skip_corrupt_images: bool = dataclasses.field(
        default=False, metadata={"help": "Image folders: skip (and count) corrupt images instead of failing."}
    )

    def __post_init__(self):
        if self.name == "":
            raise DataError("A dataset name is needed (--dataset).")
        object.__setattr__(self, "image_size", parse_image_size(self.image_size))
        object.__setattr__(self, "channels", _check_channels(self.channels))
        if not 0.0 < float(self.test_fraction) < 1.0:
            raise DataError(f"test_fraction must be in (0, 1), got {self.test_fraction!r}.")
        if self.data_dir and not os.path.exists(self.data_dir):
            # Never fall back silently to a default location when the user named another one.
            raise DataError(f"data_dir {self.data_dir} does not exist: give the directory that holds the data.")
        if self.name is not None:
            self.backend.check(self)

    @functools.cached_property
    def backend(self) -> sources.Backend:
        """The backend that serves this source (the first of `sources.backends()` that claims it)."""
        if self.name is None:
            raise DataError("A dataset name is needed (--dataset).")
        return sources.backend_for(self)

    def named(self, default_name: str) -> "DataSource":
        """This source, with `default_name` as its name if it has none."""
        return self if self.name else dataclasses.replace(self, name=default_name)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["image_size"] = list(self.image_size) if self.image_size else None
        return d

    @classmethod
    def from_dict(cls, d: dict, **changes) -> "DataSource":
        """The source of `to_dict`'s record, with the `changes` that are not None applied first (a
        recorded directory that has moved is replaced before it is checked)."""
        d = {**d, **{k: v for k, v in changes.items() if v is not None}}
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})

    def replace(self, **changes) -> "DataSource":
        """A copy with the changes that are not None."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def describe(self) -> str:
        return self.backend.describe(self)

    def info(self) -> DatasetInfo:
        """Shape (after `image_size` / `channels`), classes, source and split sizes. Reads no
        pixels for TFDS; decodes an image folder once (then cached)."""
        info = self.backend.info(self)
        if self.backend.fits_images:
            return info
        shape = self._shape_from(info.image_shape)
        if None in shape:
            raise DataError(
                f"{self.name!r} has images of varying size {info.image_shape}: pass --image_size (and --channels)."
            )
        return dataclasses.replace(info, image_shape=shape)

    def _shape_from(self, native: tuple) -> tuple:
        h, w, c = native
        return tuple(None if s is None else int(s) for s in (*(self.image_size or (h, w)), self.channels or c))

    def resizes(self) -> bool:
        """Whether the backend's native images are brought to another size or channel count here."""
        if self.backend.fits_images:
            return False
        native = self.backend.info(self).image_shape
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
        ds = self.backend.load_native(self, split)
        if self.resizes():
            size, channels = self.image_size, self.channels

            def fit(x, y):
                fitted = image_files.fit_image(tf.cast(x, tf.float32) / 255.0, size, channels)
                return tf.cast(tf.round(fitted * 255.0), tf.uint8), y

            ds = ds.map(fit, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.map(
            lambda image, label: (tf.cast(image, tf.float32) / 255.0, tf.cast(label, tf.int32)),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )

    def fingerprint(self) -> str:
        """Changes when the data the stages see changes (files, size, channels)."""
        key = f"{self.backend.fingerprint_key(self)}|{self.info().image_shape}"
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def pixel_variance(self) -> float:
        """Variance of all training-set pixel values in [0,1] (the paper's / Sonnet's normaliser
        of the reconstruction MSE), computed once per fingerprint and cached in memory and on disk
        (``$VQVAE_CACHE_DIR`` or ``~/.cache/vqvae_tf``)."""
        return _pixel_variance(self)


def clear_caches() -> None:
    """Forgets what this process memoised about the data (after files changed under it)."""
    sources.image_folder.clear_caches()
    _pixel_variance.cache_clear()
    idx_files.load_arrays.cache_clear()


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
    skip_batches: int = 0,
) -> tf.data.Dataset:
    """Batches a dataset from `load` for training (shuffled, repeated, full batches only) or
    evaluation (file order, one pass, last partial batch kept), with prefetching. The shuffle
    buffer defaults to 10,000 images, fewer for large images (about 1 GiB of float32 pixels, at
    least 1,000 images). `skip_batches` (training) starts the stream after that many full batches:
    what a resumed run has already trained on."""
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
    if skip_batches:  # a resumed run: skip images, not assembled batches (no copies)
        ds = ds.skip(skip_batches * batch_size)
    ds = ds.batch(batch_size, drop_remainder=training, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


@functools.lru_cache(maxsize=16)
def _pixel_variance(source: DataSource) -> float:
    known = source.backend.pixel_variance(source)
    if known is not None and source.backend.fits_images:
        return known  # kept with the backend's own cache (an image folder's meta.json)
    cache_path = os.path.join(files.cache_dir(), f"variance-{source.name}-{source.fingerprint()}.json")
    try:
        with open(cache_path) as f:
            return float(json.load(f)["variance"])
    except (OSError, ValueError, KeyError):
        pass
    variance = known
    if variance is None:
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
