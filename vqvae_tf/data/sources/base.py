"""`Backend`: where a `DataSource`'s images come from, one subclass per file, registered by name.

A backend answers, for a source (name, data_dir, image size, channels, ...): whether it serves it
(`claims`), the dataset's native `info` (shape before resizing, classes, split sizes), the images
of a split (`load_native`: uint8 ``[H,W,C]`` and int32 labels), a `fingerprint_key` that changes
with the data, and optionally a fast `pixel_variance`. `DataSource` does the rest for every
backend: resizing and channel changes, scaling to [0, 1], the fingerprint, the variance cache.

    @register_backend
    class MyBackend(Backend):
        name = "my_source"
        ...

Backends are asked in registration order, fallbacks last; the first that claims a source serves it
(`idx` claims Fashion-MNIST / MNIST when their IDX files are found; `tfds`, the fallback, claims
every other name).
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the rest of the pipeline needs to know about a dataset."""

    name: str
    image_shape: tuple  # (H, W, C); None where the size varies
    num_classes: int
    source: str  # "idx:<dir>", "tfds" or "image_folder:<dir>"
    num_examples: dict  # split -> count
    class_names: tuple = ()  # label i's name


class Backend:
    """One kind of data source (see the module docstring). Subclasses set `name` and implement
    `claims`, `info`, `load_native` and `fingerprint_key`."""

    name: str = ""
    # A fallback is asked after every other backend (TFDS, which claims any name).
    fallback: bool = False
    # True if `load_native` already gives images at the source's image size and channels (an
    # image folder decodes to them); otherwise `DataSource` resizes the native images.
    fits_images: bool = False

    def check(self, source) -> None:
        """Raises DataError for a source this backend cannot read (e.g. a missing directory flag)."""

    def claims(self, source) -> bool:
        raise NotImplementedError

    def info(self, source) -> DatasetInfo:
        """The dataset's native info (before any resizing, unless `fits_images`)."""
        raise NotImplementedError

    def load_native(self, source, split: str) -> tf.data.Dataset:
        """Unbatched (image uint8 [H,W,C], label int) of `split`, in file order."""
        raise NotImplementedError

    def fingerprint_key(self, source) -> str:
        """A string that changes when the data of `source` changes (files, versions)."""
        raise NotImplementedError

    def pixel_variance(self, source) -> float | None:
        """The training pixels' variance if this backend knows it cheaply, else None (then it is
        computed from `load`)."""
        return None

    def describe(self, source) -> str:
        return source.name


_BACKENDS: list = []


def register_backend(cls):
    """Class decorator: registers a `Backend` subclass (asked after those registered before)."""
    if any(b.name == cls.name for b in _BACKENDS):
        raise ValueError(f"A data backend named {cls.name!r} is registered already.")
    _BACKENDS.append(cls())
    return cls


def backends() -> tuple:
    return tuple(_BACKENDS)


def backend_for(source) -> Backend:
    """The first registered backend that claims `source` (fallbacks asked last)."""
    for backend in sorted(_BACKENDS, key=lambda b: b.fallback):  # stable: registration order
        if backend.claims(source):
            return backend
    raise LookupError(f"No data backend serves {source.name!r}.")  # the tfds fallback claims every name
