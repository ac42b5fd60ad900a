"""Fashion-MNIST / MNIST from local IDX files (``*-ubyte`` or ``*-ubyte.gz``).

Looked up in ``data_dir`` (argument / ``--data_dir``), then ``$VQVAE_DATA_DIR``, then the Debian
location ``/usr/share/datasets/fashion-mnist`` (package ``dataset-fashion-mnist``). Each directory
may hold the files directly or in a sub-directory named after the dataset. TFDS cannot read these
files (its checksums are of the original gzip bytes), so the project reads IDX itself.
"""

from __future__ import annotations

import functools
import gzip
import os
import struct

import numpy as np

from vqvae_tf.data.errors import DataError

DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
IDX_DATASETS = ("fashion_mnist", "mnist")
SPLIT_PREFIX = {"train": "train", "test": "t10k"}
# IDX magic: two zero bytes, a type code (0x08 = unsigned byte) and the number of dimensions.
_IDX_UBYTE = 0x08
NUM_CLASSES = 10
CLASS_NAMES = {
    "fashion_mnist": (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    "mnist": tuple(str(i) for i in range(10)),
}


def read_idx(path: str) -> np.ndarray:
    """Reads one IDX file (optionally gzip-compressed) of unsigned bytes into a uint8 array.

    Raises:
      DataError: the file is missing, has a wrong magic number, or is truncated.
    """
    if not os.path.isfile(path):
        raise DataError(f"IDX file not found: {path}")
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:  # gzip raises these for truncated or corrupt streams
        raise DataError(f"Cannot read IDX file {path}: {e}. Re-download or reinstall it.") from e
    if len(data) < 4:
        raise DataError(f"IDX file {path} is truncated: {len(data)} bytes, no header.")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != _IDX_UBYTE or not 1 <= ndim <= 4:
        raise DataError(
            f"IDX file {path} has a wrong magic number 0x{data[:4].hex()} "
            "(expected 0x0000080N: unsigned bytes, N dimensions). Is it an IDX file?"
        )
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DataError(f"IDX file {path} is truncated inside its header.")
    shape = struct.unpack(f">{ndim}I", data[4:header_len])
    expected = int(np.prod(shape))
    got = len(data) - header_len
    if got != expected:
        raise DataError(
            f"IDX file {path} is truncated or padded: header says shape {shape} "
            f"({expected} bytes), file holds {got} bytes of data. Re-download it."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(shape)


def search_dirs(name: str, data_dir: str | None) -> list[str]:
    roots = [d for d in (data_dir, os.environ.get("VQVAE_DATA_DIR")) if d]
    if name == "fashion_mnist":
        roots.append(DEBIAN_FASHION_MNIST_DIR)
    dirs = []
    for root in roots:
        dirs += [os.path.join(root, name), os.path.join(root, name.replace("_", "-")), root]
    return dirs


def split_file(directory: str, split: str, kind: str) -> str | None:
    stem = f"{SPLIT_PREFIX[split]}-{kind}-ubyte"
    for candidate in (stem, stem + ".gz"):
        path = os.path.join(directory, candidate)
        if os.path.isfile(path):
            return path
    return None


def find_idx_dir(name: str, data_dir: str | None = None) -> str | None:
    """Returns the first directory holding the train images IDX file of `name`, or None."""
    if name not in IDX_DATASETS:
        return None
    for directory in search_dirs(name, data_dir):
        if split_file(directory, "train", "images-idx3") is not None:
            return directory
    return None


@functools.lru_cache(maxsize=8)
def load_arrays(directory: str, split: str):
    images_path = split_file(directory, split, "images-idx3")
    labels_path = split_file(directory, split, "labels-idx1")
    for kind, path in (("images", images_path), ("labels", labels_path)):
        if path is None:
            raise DataError(
                f"Missing IDX {kind} file for split {split!r} in {directory} (expected "
                f"{SPLIT_PREFIX[split]}-{kind}-idx*-ubyte[.gz]). Reinstall the dataset."
            )
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3:
        raise DataError(f"IDX images file {images_path} has shape {images.shape}, want [N,H,W].")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DataError(
            f"IDX labels file {labels_path} has shape {labels.shape}, but the images file "
            f"holds {images.shape[0]} images."
        )
    return images[..., None], labels.astype(np.int32)


def missing_message(name: str, data_dir: str | None) -> str:
    looked = ", ".join(search_dirs(name, data_dir)) or "(no directory given)"
    return (
        f"No IDX files for {name!r} in: {looked}. Install them with "
        "`apt-get install dataset-fashion-mnist` (Fashion-MNIST) or pass --data_dir / set "
        "VQVAE_DATA_DIR to a directory holding train-images-idx3-ubyte[.gz] etc."
    )
