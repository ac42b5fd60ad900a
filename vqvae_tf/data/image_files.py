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
as ``keras.utils.image_dataset_from_directory(crop_to_aspect_ratio=True)`` does. The decoded images
(uint8) are written once per folder *fingerprint* (relative paths, sizes and modification times
of the files, image size, channels, test fraction) to TFRecord shards under
``$VQVAE_CACHE_DIR/image_folder/<fingerprint>/`` with the training pixel variance; later loads
read those shards, and hold a split in memory when it fits (`memory_budget_bytes`). A file over
16 megapixels is decoded one at a time at reduced size (`large_images`: about 4 bytes times its
pixels at most, 2 GiB), not whole in float32.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os

import numpy as np
import tensorflow as tf

from vqvae_tf.data import large_images
from vqvae_tf.data.errors import DataError
from vqvae_tf.utils import files, progress

NAME = "image_folder"
SPLITS = ("train", "test")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
# Bump when the cache's format or the decoding changes: old caches are then not read.
CACHE_VERSION = 2  # 2: files over large_images.LARGE_PIXELS decoded at reduced size
_RECORD_IMAGES = 256  # images per TFRecord record in the cache
_SHARD_BYTES = 512 * 2**20  # pixels per cache shard file, at most about


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


def cache_root() -> str:
    return os.path.join(files.cache_dir(), NAME)


def memory_budget_bytes() -> int:
    """Largest split (uint8 pixels) held in memory: $VQVAE_MEMORY_CACHE_BYTES, else a quarter of
    the machine's memory, at most 8 GiB."""
    if os.environ.get("VQVAE_MEMORY_CACHE_BYTES"):
        return int(os.environ["VQVAE_MEMORY_CACHE_BYTES"])
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 * 2**30
    return min(8 * 2**30, total // 4)


def fingerprint(folder: Scan, image_shape: tuple, test_fraction: float) -> str:
    key = {
        "version": CACHE_VERSION,
        "root": folder.root,
        "layout": folder.layout,
        "image_shape": list(image_shape),
        "test_fraction": test_fraction if folder.layout == "hash" else None,
        "files": [list(s) for s in folder.stats],
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


def _decode_pass(folder: Scan, split: str, image_shape: tuple):
    """Yields (indices, uint8 images, labels) batches of `split`, decoded in parallel (a very large
    file one at a time, at reduced size: `large_images`); the images that fail to decode are
    missing from the indices."""
    entries = folder.files.get(split, [])
    kinds = [large_images.kind_of(os.path.join(folder.root, rel)) for rel, _ in entries]
    kept = [i for i, kind in enumerate(kinds) if kind != "too_large"]  # (the others: corrupt)
    paths = [os.path.join(folder.root, entries[i][0]) for i in kept]
    labels = np.array([entries[i][1] for i in kept], np.int32)
    large = np.array([kinds[i] == "large" for i in kept], bool)
    h, w, c = image_shape

    def load(path, big):
        def reduced():
            image = tf.numpy_function(large_images.decode_reduced, [path, h, w], tf.uint8, stateful=False)
            image = fit_image(tf.cast(tf.ensure_shape(image, [None, None, None]), tf.float32) / 255.0, (h, w), c)
            return tf.cast(tf.round(image * 255.0), tf.uint8)

        return tf.cond(big, reduced, lambda: decode(path, (h, w), c))

    # (tf.constant: an empty list of paths is still a string tensor)
    ds = tf.data.Dataset.from_tensor_slices(
        (np.array(kept, np.int64), tf.constant(paths, tf.string, shape=[len(paths)]), labels, large)
    )
    ds = ds.map(lambda i, p, y, big: (i, load(p, big), y), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.ignore_errors().batch(_RECORD_IMAGES).prefetch(2)
    yield from ds.as_numpy_iterator()


def _record(images: np.ndarray, labels: np.ndarray) -> bytes:
    return tf.train.Example(
        features=tf.train.Features(
            feature={
                "images": tf.train.Feature(bytes_list=tf.train.BytesList(value=[images.tobytes()])),
                "labels": tf.train.Feature(int64_list=tf.train.Int64List(value=labels.tolist())),
            }
        )
    ).SerializeToString()


def prepare(folder: Scan, image_shape: tuple, test_fraction: float) -> dict:
    """The cache of `folder` at `image_shape`: made (one decoding pass per split) unless it exists.
    Returns its meta.json: counts, corrupt files per split, train pixel variance, shards."""
    key = fingerprint(folder, image_shape, test_fraction)
    directory = os.path.join(cache_root(), key)
    meta_path = os.path.join(directory, "meta.json")
    try:
        with open(meta_path) as f:
            return json.load(f)
    except (OSError, ValueError):
        pass
    total = sum(len(v) for v in folder.files.values())
    progress.log(
        f"Decoding {total} images of {folder.root} to {image_shape[0]}x{image_shape[1]}x{image_shape[2]} "
        f"(once for these files; cache {directory})..."
    )
    meta = {
        "fingerprint": key,
        "root": folder.root,
        "layout": folder.layout,
        "image_shape": list(image_shape),
        "class_names": list(folder.class_names),
        "counts": {},
        "corrupt": {},
        "shards": {},
    }
    per_shard = max(1, _SHARD_BYTES // (int(np.prod(image_shape)) * _RECORD_IMAGES))  # records per shard
    with files.atomic_directory(directory, overwrite=True) as tmp:
        for split in folder.files:
            entries = folder.files[split]
            kept, total_sum, total_sq, records, writer, shards = [], 0.0, 0.0, 0, None, []
            try:
                for indices, images, labels in _decode_pass(folder, split, image_shape):
                    if records % per_shard == 0:
                        if writer:
                            writer.close()
                        shards.append(f"{split}-{len(shards):05d}.tfrecord")
                        writer = tf.io.TFRecordWriter(os.path.join(tmp, shards[-1]))
                    writer.write(_record(images, labels))
                    records += 1
                    kept.append(indices)
                    if split == "train":
                        x = images.astype(np.float64) / 255.0
                        total_sum += float(x.sum())
                        total_sq += float(np.square(x).sum())
            finally:
                if writer:
                    writer.close()
            kept = np.concatenate(kept) if kept else np.zeros([0], np.int64)
            lost = np.setdiff1d(np.arange(len(entries)), kept)
            meta["counts"][split] = int(len(kept))
            meta["shards"][split] = shards
            meta["corrupt"][split] = sorted(
                [entries[i][0] for i in lost]
                + [r for r in folder.corrupt_names if _split_of(folder, r, test_fraction) == split]
            )
            if split == "train" and len(kept):
                n = len(kept) * float(np.prod(image_shape))
                mean = total_sum / n
                meta["pixel_variance"] = total_sq / n - mean * mean
        files.atomic_write_json(os.path.join(tmp, "meta.json"), meta)
    return meta


def _split_of(folder: Scan, relpath: str, test_fraction: float) -> str:
    if folder.layout == "splits":
        return relpath.split("/", 1)[0]
    return "test" if in_test_split(relpath, test_fraction) else "train"


def read_cache(meta: dict, split: str) -> tf.data.Dataset:
    """(image uint8 [H,W,C], label int32) of `split` from the cache, in file order; held in memory
    when the split fits `memory_budget_bytes`."""
    h, w, c = meta["image_shape"]
    directory = os.path.join(cache_root(), meta["fingerprint"])
    paths = [os.path.join(directory, s) for s in meta["shards"][split]]
    spec = {
        "images": tf.io.FixedLenFeature([], tf.string),
        "labels": tf.io.VarLenFeature(tf.int64),
    }

    def parse(record):
        ex = tf.io.parse_single_example(record, spec)
        images = tf.reshape(tf.io.decode_raw(ex["images"], tf.uint8), [-1, h, w, c])
        return images, tf.cast(tf.sparse.to_dense(ex["labels"]), tf.int32)

    ds = tf.data.TFRecordDataset(paths).map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).unbatch()
    if meta["counts"][split] * h * w * c <= memory_budget_bytes():
        ds = ds.cache()
    return ds
