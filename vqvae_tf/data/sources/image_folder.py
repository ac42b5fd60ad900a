"""The image-folder backend: ``--dataset=image_folder --data_dir=DIR`` (`vqvae_tf.data.image_files`
scans and decodes, `image_cache` caches the decoded images; this adapts them to `Backend`)."""

from __future__ import annotations

import functools

from vqvae_tf.data import image_cache, image_files
from vqvae_tf.data.errors import DataError
from vqvae_tf.data.sources.base import Backend, DatasetInfo, register_backend
from vqvae_tf.utils import progress

_LOGGED: set = set()


def log_once(message: str) -> None:
    if message not in _LOGGED:
        _LOGGED.add(message)
        progress.log(message)


_scan = functools.lru_cache(maxsize=8)(image_files.scan)  # one walk per folder and process


@functools.lru_cache(maxsize=32)
def _prepared_folder(root, image_size, channels, test_fraction) -> dict:
    folder = _scan(root, test_fraction)
    if folder.ignored:
        shown = ", ".join(folder.ignored[:5]) + (", ..." if len(folder.ignored) > 5 else "")
        log_once(f"Ignored {len(folder.ignored)} file(s) in {folder.root} that are not images: {shown}")
    if image_size is None or channels is None:
        h, w, c = image_files.first_image_shape(folder)
        image_size, channels = image_size or (h, w), channels or c
    return image_cache.prepare(folder, (*image_size, channels), test_fraction)


def clear_caches() -> None:
    _scan.cache_clear()
    _prepared_folder.cache_clear()


@register_backend
class ImageFolderBackend(Backend):
    name = image_files.NAME
    fits_images = True

    def check(self, source) -> None:
        if not source.data_dir:
            raise DataError("--dataset=image_folder needs --data_dir=DIR, the folder of images.")

    def claims(self, source) -> bool:
        return source.name == image_files.NAME

    def meta(self, source) -> dict:
        """The decoded cache's meta.json of the folder (made on first use), with the corrupt-file
        policy applied."""
        meta = _prepared_folder(source.data_dir, source.image_size, source.channels, float(source.test_fraction))
        corrupt = [f for split in meta["corrupt"].values() for f in split]
        if corrupt:
            shown = ", ".join(corrupt[:10]) + (f" and {len(corrupt) - 10} more" if len(corrupt) > 10 else "")
            if not source.skip_corrupt_images:
                raise DataError(
                    f"{len(corrupt)} corrupt or truncated image(s) in {meta['root']}: {shown}. Fix or remove "
                    "them, or pass --skip_corrupt_images to skip them."
                )
            log_once(f"Skipping {len(corrupt)} corrupt image(s) in {meta['root']}: {shown}.")
        return meta

    def info(self, source) -> DatasetInfo:
        meta = self.meta(source)
        names = tuple(meta["class_names"])
        return DatasetInfo(
            source.name,
            tuple(meta["image_shape"]),
            len(names),
            f"image_folder:{meta['root']}",
            dict(meta["counts"]),
            names,
        )

    def load_native(self, source, split):
        meta = self.meta(source)
        if split not in meta["counts"]:
            raise DataError(f"Image folder {meta['root']} has a train/ folder but no {split}/ folder beside it.")
        if not meta["counts"][split]:
            raise DataError(
                f"No image of {meta['root']} is in its {split} split (test fraction "
                f"{source.test_fraction}); add images or change --test_fraction."
            )
        return image_cache.read_cache(meta, split)

    def fingerprint_key(self, source) -> str:
        return self.meta(source)["fingerprint"]

    def pixel_variance(self, source) -> float:
        meta = self.meta(source)
        if "pixel_variance" not in meta:
            raise DataError(f"Image folder {source.data_dir} has no training images that decode.")
        return float(meta["pixel_variance"])

    def describe(self, source) -> str:
        return f"{source.name} ({source.data_dir})"
