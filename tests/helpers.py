"""Helpers shared by the test modules (test modules import from here, never from each other)."""

import gzip
import os
import struct

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_idx(path, array, magic=None, truncate=0, compress=False):
    array = np.asarray(array, np.uint8)
    header = magic if magic is not None else struct.pack(">HBB", 0, 8, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    raw = (header + array.tobytes())[: len(header) + array.size - truncate]
    opener = gzip.open if compress else open
    with opener(path, "wb") as f:
        f.write(raw)
    return path


def fake_mnist_dir(root, n_train=12, n_test=5, compress=True, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    ext = ".gz" if compress else ""
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        imgs = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, (n,), dtype=np.uint8)
        write_idx(os.path.join(root, f"{prefix}-images-idx3-ubyte{ext}"), imgs, compress=compress)
        write_idx(os.path.join(root, f"{prefix}-labels-idx1-ubyte{ext}"), labels, compress=compress)
        arrays[prefix] = (imgs, labels)
    return arrays
