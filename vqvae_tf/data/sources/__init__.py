"""Data backends, one per file, asked in this order (`base.register_backend`):

    image_folder.py   --dataset=image_folder --data_dir=DIR: the user's own images
    clipart.py        --dataset=clipart: Debian's openclipart-png as an image folder (64x64 RGB)
    idx.py            fashion_mnist / mnist from local IDX files, when they are found
    tfds.py           any other name through TensorFlow Datasets (the fallback, asked last)

A new backend is one file here and one import line below (or, outside the package, a `Backend`
subclass decorated with `register_backend` in your own module).
"""

from vqvae_tf.data.sources.base import Backend, DatasetInfo, backend_for, backends, register_backend

# isort: off
from vqvae_tf.data.sources import image_folder, clipart, idx, tfds  # noqa: F401  (registrations, in order)
# isort: on

__all__ = ["Backend", "DatasetInfo", "backend_for", "backends", "register_backend"]
