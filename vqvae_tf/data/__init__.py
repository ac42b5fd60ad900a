"""Data: image datasets by name (IDX files, TFDS, image folders) and the exported codes the prior
trains on.

from vqvae_tf import data
ds = data.load("fashion_mnist", "train")        # (image float32 [H,W,C] in [0,1], label int32)
ds = data.load("image_folder", "train", data_dir="photos/", image_size=64, channels=3)
train = data.batched(ds, 128, training=True)
"""

from vqvae_tf.data.codes import CodesError, load_meta, read_codes
from vqvae_tf.data.datasets import (
    DataSource,
    batched,
    clear_caches,
    dataset_info,
    load,
    parse_image_size,
    pixel_variance,
)
from vqvae_tf.data.errors import DataError
from vqvae_tf.data.idx_files import DEBIAN_FASHION_MNIST_DIR, IDX_DATASETS, read_idx
from vqvae_tf.data.sources import Backend, DatasetInfo, register_backend

__all__ = [
    "Backend",
    "CodesError",
    "DEBIAN_FASHION_MNIST_DIR",
    "DataError",
    "DataSource",
    "DatasetInfo",
    "IDX_DATASETS",
    "batched",
    "clear_caches",
    "dataset_info",
    "load",
    "load_meta",
    "parse_image_size",
    "pixel_variance",
    "read_codes",
    "read_idx",
    "register_backend",
]
