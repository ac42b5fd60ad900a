"""The IDX backend: Fashion-MNIST / MNIST from local IDX files (`vqvae_tf.data.idx_files` reads them)."""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from vqvae_tf.data import idx_files
from vqvae_tf.data.errors import DataError
from vqvae_tf.data.sources.base import Backend, DatasetInfo, register_backend


@register_backend
class IdxBackend(Backend):
    name = "idx"

    def claims(self, source) -> bool:
        return idx_files.find_idx_dir(source.name, source.data_dir) is not None

    def info(self, source) -> DatasetInfo:
        directory = idx_files.find_idx_dir(source.name, source.data_dir)
        counts, shape = {}, None
        for split in idx_files.SPLIT_PREFIX:
            if idx_files.split_file(directory, split, "images-idx3") is not None:
                images, _ = idx_files.load_arrays(directory, split)
                counts[split] = int(images.shape[0])
                shape = tuple(int(s) for s in images.shape[1:])
        return DatasetInfo(
            source.name, shape, idx_files.NUM_CLASSES, f"idx:{directory}", counts, idx_files.CLASS_NAMES[source.name]
        )

    def load_native(self, source, split):
        if split not in idx_files.SPLIT_PREFIX:
            raise DataError(
                f"Split {split!r} does not exist for dataset {source.name!r}; available: {sorted(idx_files.SPLIT_PREFIX)}."
            )
        images, labels = idx_files.load_arrays(idx_files.find_idx_dir(source.name, source.data_dir), split)
        return tf.data.Dataset.from_tensor_slices((images, labels))

    def fingerprint_key(self, source) -> str:
        path = idx_files.split_file(idx_files.find_idx_dir(source.name, source.data_dir), "train", "images-idx3")
        st = os.stat(path)
        return f"{source.name}|{os.path.realpath(path)}|{st.st_size}|{int(st.st_mtime)}"

    def pixel_variance(self, source) -> float | None:
        if source.resizes():
            return None
        images, _ = idx_files.load_arrays(idx_files.find_idx_dir(source.name, source.data_dir), "train")
        return float((images.astype(np.float64) / 255.0).var())
