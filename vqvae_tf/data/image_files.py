"""The user's own images: a directory of PNG, JPEG, BMP, GIF (first frame) or WebP files.

Layouts (TFDS ImageFolder's, or one folder split by a hash)::

    DIR/train/[CLASS/]*.png   DIR/test/[CLASS/]*.png        split folders (test/ may be absent)
    DIR/[CLASS/]*.png                                       no split folders: a held-out test
                                                            fraction, chosen per file by a hash
                                                            of its relative path

Labels are the class sub-folder names in sorted order (the union over both splits), or -1 for all
when there are no class folders. Files are recognised by content (their first bytes), not by
extension; other files are ignored and counted. A file named like an image that is not one, or an
image that does not decode, is *corrupt*: an error naming it, or skipped and counted
(``skip_corrupt_images``).

Decoding: ``tf.io.decode_image`` in a parallel ``tf.data`` map, alpha composited over white, grey
<-> RGB as asked, centre-cropped to the requested aspect ratio and resized (bilinear, antialiased)
as ``keras.utils.image_dataset_from_directory(crop_to_aspect_ratio=True)`` does. A file over
16 megapixels is decoded one at a time at reduced size (`large_images`: about 4 bytes times its
pixels at most, 2 GiB), not whole in float32. The decoded images are cached once per folder
(`image_cache`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os

import tensorflow as tf

from vqvae_tf.data.errors import DataError

NAME = "image_folder"
SPLITS = ("train", "test")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def sniff(head: bytes) -> str | None:
    """The image format of a file from its first 12 bytes, or None if it is none of ours."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head.startswith(b"BM"):
        return "bmp"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


def in_test_split(relpath: str, test_fraction: float) -> bool:
    """Whether `relpath` (a '/'-separated path under the folder) is held out for test: a stable hash
    of the path alone, so adding or removing other files never moves it."""
    h = int.from_bytes(hashlib.sha256(relpath.encode("utf-8")).digest()[:8], "big")
    return h / 2.0**64 < test_fraction


@functools.lru_cache(maxsize=200_000)
def _kind_of(path: str, size: int, mtime_ns: int) -> str | None:  # size/mtime key the cache
    with open(path, "rb") as f:
        return sniff(f.read(12))


@dataclasses.dataclass(frozen=True)
class Scan:
    """What a folder holds. `files[split]`: sorted (relative path, label) of the images;
    `corrupt_names`: paths named like images that are not; `ignored`: other files."""

    root: str
    layout: str  # "splits" or "hash"
    class_names: tuple
    files: dict
    corrupt_names: tuple
    ignored: tuple
    stats: tuple  # (relpath, size, mtime_ns) of every image candidate, for the fingerprint


def _walk(top: str):
    """Sorted relative paths of the files under `top`; hidden directories are skipped."""
    out = []
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = os.path.relpath(dirpath, top)
        for name in sorted(filenames):
            out.append(name if rel == "." else os.path.join(rel, name).replace(os.sep, "/"))
    return out


def scan(root: str, test_fraction: float = 0.1) -> Scan:
    """Lists the images of `root` in either layout (see the module docstring).

    Raises:
      DataError: missing, non-directory or empty folder; a split without images.
    """
    if not root:
        raise DataError("--dataset=image_folder needs --data_dir=DIR, the folder of images.")
    if not os.path.isdir(root):
        what = "does not exist" if not os.path.exists(root) else "is not a directory"
        raise DataError(f"Image folder {root} {what}.")
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction must be in (0, 1), got {test_fraction}.")
    root = os.path.abspath(root)
    if os.path.isdir(os.path.join(root, "train")):
        layout = "splits"
        tops = {s: os.path.join(root, s) for s in SPLITS if os.path.isdir(os.path.join(root, s))}
    else:
        layout, tops = "hash", {"": root}

    entries, ignored, corrupt, stats, classes = {}, [], [], [], set()
    for key, top in tops.items():
        prefix = f"{key}/" if key else ""
        subdirs = sorted(d for d in os.listdir(top) if not d.startswith(".") and os.path.isdir(os.path.join(top, d)))
        found = []
        for rel in _walk(top):
            path = os.path.join(top, rel)
            try:
                st = os.stat(path)
            except OSError:  # a broken link, or a file removed while we walked
                ignored.append(prefix + rel)
                continue
            class_name = rel.split("/", 1)[0] if "/" in rel else None
            kind = _kind_of(path, st.st_size, st.st_mtime_ns) if st.st_size else None
            if kind is None:
                named_like_image = os.path.splitext(rel)[1].lower() in IMAGE_EXTENSIONS
                (corrupt if named_like_image else ignored).append(prefix + rel)
                if named_like_image:
                    stats.append((prefix + rel, st.st_size, st.st_mtime_ns))
                continue
            if subdirs and class_name is None:
                ignored.append(prefix + rel)  # an image beside the class folders belongs to none
                continue
            found.append((rel, class_name))
            stats.append((prefix + rel, st.st_size, st.st_mtime_ns))
            if class_name is not None:
                classes.add(class_name)
        entries[key] = found
    class_names = tuple(sorted(classes))
    index = {c: i for i, c in enumerate(class_names)}
    out = {s: [] for s in SPLITS} if layout == "hash" else {}
    for key, found in entries.items():
        prefix = f"{key}/" if key else ""
        for rel, class_name in found:
            split = key or ("test" if in_test_split(rel, test_fraction) else "train")
            out.setdefault(split, []).append((prefix + rel, index[class_name] if class_name is not None else -1))
    if not any(out.values()):
        detail = f" ({len(ignored)} other files ignored)" if ignored else ""
        raise DataError(f"Image folder {root} holds no PNG, JPEG, BMP, GIF or WebP images{detail}.")
    if layout == "splits":
        for split in tops:
            if not out.get(split):
                raise DataError(f"Split folder {tops[split]} holds no images.")
    return Scan(root, layout, class_names, out, tuple(corrupt), tuple(ignored), tuple(stats))


# --------------------------------------------------------------------------------------------
# Decoding


def fit_image(image: tf.Tensor, image_size, channels: int | None) -> tf.Tensor:
    """float32 [h,w,c] in [0,1] (c in 1..4) -> [H,W,channels]: alpha over white, grey <-> RGB,
    centre crop to the aspect ratio of `image_size` (H, W) and bilinear antialiased resize, as
    ``keras.preprocessing.image.smart_resize``. None keeps the size / the channels."""
    c = tf.shape(image)[-1]
    if image.shape[-1] is None or image.shape[-1] in (2, 4):

        def over_white(x):
            colour, alpha = x[..., :-1], x[..., -1:]
            return colour * alpha + (1.0 - alpha)

        image = tf.cond(tf.equal(c % 2, 0), lambda: over_white(image), lambda: image)
    if channels == 3:
        image = tf.cond(tf.equal(tf.shape(image)[-1], 1), lambda: tf.tile(image, [1, 1, 3]), lambda: image)
    elif channels == 1:
        weights = tf.constant([0.2989, 0.5870, 0.1140])  # tf.image.rgb_to_grayscale's
        image = tf.cond(
            tf.equal(tf.shape(image)[-1], 3),
            lambda: tf.reduce_sum(image * weights, axis=-1, keepdims=True),
            lambda: image,
        )
    if channels is not None:
        image = tf.ensure_shape(image, [None, None, channels])
    if image_size is not None:
        height, width = (int(s) for s in image_size)
        shape = tf.shape(image)
        h, w = shape[0], shape[1]
        # keras smart_resize: the largest centred crop of the target aspect ratio.
        crop_h = tf.minimum(h, tf.cast(tf.cast(w, tf.float64) * height / width, tf.int32))
        crop_w = tf.minimum(w, tf.cast(tf.cast(h, tf.float64) * width / height, tf.int32))
        top, left = (h - crop_h) // 2, (w - crop_w) // 2
        image = image[top : top + crop_h, left : left + crop_w]
        image = tf.cond(
            tf.logical_and(tf.equal(crop_h, height), tf.equal(crop_w, width)),
            lambda: image,
            lambda: tf.image.resize(image, [height, width], method="bilinear", antialias=True),
        )
        image = tf.clip_by_value(tf.ensure_shape(image, [height, width, image.shape[-1]]), 0.0, 1.0)
    return image


def decode(path: tf.Tensor, image_size, channels: int) -> tf.Tensor:
    """The image file `path` as uint8 [H,W,channels] (`fit_image`)."""
    raw = tf.io.read_file(path)
    # uint8: WebP decodes to nothing else; 16-bit PNGs are scaled to 8 bits (the cache's depth).
    image = tf.io.decode_image(raw, channels=0, dtype=tf.uint8, expand_animations=False)
    image = fit_image(tf.cast(image, tf.float32) / 255.0, image_size, channels)
    return tf.cast(tf.round(image * 255.0), tf.uint8)


def first_image_shape(folder: Scan) -> tuple:
    """(H, W, C) of the first image that decodes, C being 1 for grey (with or without alpha)."""
    for rel, _ in folder.files.get("train") or next(iter(folder.files.values())):
        try:
            image = tf.io.decode_image(
                tf.io.read_file(os.path.join(folder.root, rel)), channels=0, expand_animations=False
            )
        except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError):
            continue
        h, w, c = (int(s) for s in image.shape)
        return h, w, 1 if c in (1, 2) else 3
    raise DataError(f"No image in {folder.root} decodes.")


# --------------------------------------------------------------------------------------------
# The decoded cache
