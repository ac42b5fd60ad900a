"""The clip-art backend: ``--dataset=clipart``, Debian's ``openclipart-png`` (8,121 public-domain
clip-art PNGs in 22 category folders under /usr/share/openclipart/png; `make data-clipart`).

It is the image folder of that directory with the colour zoo's defaults: 64x64 RGB (alpha over
white), labels from the 22 top-level folders, 10% held out by path hash, and the package's two
corrupt PNGs skipped (logged). ``--data_dir``, ``--image_size``, ``--channels`` and
``--test_fraction`` still change them; ``$VQVAE_CLIPART_DIR`` moves the default folder.
"""

from __future__ import annotations

import dataclasses
import os

from vqvae_tf.data import image_files
from vqvae_tf.data.errors import DataError
from vqvae_tf.data.sources.base import register_backend
from vqvae_tf.data.sources.image_folder import ImageFolderBackend

NAME = "clipart"
DEFAULT_DIR = "/usr/share/openclipart/png"
IMAGE_SIZE = (64, 64)
CHANNELS = 3


def default_dir() -> str:
    return os.environ.get("VQVAE_CLIPART_DIR") or DEFAULT_DIR


def _directory(source) -> str:
    return source.data_dir or default_dir()


@register_backend
class ClipartBackend(ImageFolderBackend):
    name = NAME

    def folder(self, source):
        """The image-folder source this clip-art source reads (its defaults filled in)."""
        return dataclasses.replace(
            source,
            name=image_files.NAME,
            data_dir=_directory(source),
            image_size=source.image_size or IMAGE_SIZE,
            channels=source.channels or CHANNELS,
            skip_corrupt_images=True,
        )

    def check(self, source) -> None:
        directory = _directory(source)
        if not os.path.isdir(directory):
            raise DataError(
                f"--dataset=clipart: {directory} not found. Install Debian's openclipart-png (`make data-clipart`, "
                "or apt-get install openclipart-png), or give the folder with --data_dir (or $VQVAE_CLIPART_DIR)."
            )

    def claims(self, source) -> bool:
        return source.name == NAME

    def meta(self, source) -> dict:
        return super().meta(self.folder(source))

    def info(self, source):
        return dataclasses.replace(super().info(source), name=source.name)

    def describe(self, source) -> str:
        return f"{source.name} ({_directory(source)})"
