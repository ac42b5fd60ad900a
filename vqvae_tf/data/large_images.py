"""Decoding very large image files within a memory bound.

TensorFlow decodes a file whole and `image_folder.fit_image` works in float32, so one 16000x14464
RGBA PNG (231 megapixels, a file of openclipart-png) took about 14 GB while an image-folder cache
was built. A file of more than `LARGE_PIXELS` (read from its header, no decoding) is instead
decoded by Pillow in its own 8-bit mode (at most 4 bytes a pixel, and never more than TensorFlow's
own 2**31-byte limit on a decoded image, beyond which the file is corrupt as before), one such file
at a time, box-reduced by an integer factor (`Image.reduce`: an exact area average) to at least
`MARGIN` times the requested size, and only then given to `fit_image` (the same crop, antialiased
resize, alpha and channel handling as every other file). So preparing a folder needs at most
about 4 bytes times its largest image's pixels (2 GiB) beyond the small images decoded in parallel.
"""

from __future__ import annotations

import contextlib
import threading
import warnings

import numpy as np

# Files above this many pixels take the reduced path (about 4,000 x 4,000).
LARGE_PIXELS = 16_000_000
# TensorFlow refuses to decode an image of 2**31 bytes or more ("PNG size too large for int").
MAX_DECODED_BYTES = 2**31
# The reduced image keeps at least this many times the requested size per side before the resize.
MARGIN = 4
_ONE_AT_A_TIME = threading.Lock()


@contextlib.contextmanager
def _without_pixel_limit():
    """Pillow without its decompression-bomb limit (these files are big on purpose), restored after."""
    from PIL import Image

    previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        yield Image
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def header_size(path: str) -> tuple | None:
    """(width, height, bytes a decoded pixel takes) of an image file from its header (nothing
    decoded), or None if Pillow cannot read it (TensorFlow decides then)."""
    try:
        with warnings.catch_warnings(), _without_pixel_limit() as Image:
            warnings.simplefilter("ignore")  # DecompressionBombWarning: we only read the header
            with Image.open(path) as image:
                palette = image.mode in ("P", "PA")
                bands = (4 if image.has_transparency_data else 3) if palette else len(image.getbands())
                return image.size[0], image.size[1], bands
    except Exception:  # noqa: BLE001  not an image Pillow knows: the regular path reports it
        return None


def kind_of(path: str) -> str:
    """ "large" (the reduced path), "too_large" (over MAX_DECODED_BYTES decoded: corrupt, as
    TensorFlow finds it) or "regular"."""
    size = header_size(path)
    if size is None or size[0] * size[1] <= LARGE_PIXELS:
        return "regular"
    return "too_large" if size[0] * size[1] * size[2] >= MAX_DECODED_BYTES else "large"


def decode_reduced(path: bytes, height: int, width: int) -> np.ndarray:
    """uint8 [h, w, c] (c in 1..4, as TensorFlow's decode_image gives) of a large file, box-reduced
    to at least MARGIN x (height, width) per side (`kind_of` said "large")."""
    path = path.decode() if isinstance(path, bytes) else path
    with _ONE_AT_A_TIME, _without_pixel_limit() as Image, Image.open(path) as image:
        image.load()
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            array = (np.asarray(image, np.uint32) >> 8).clip(0, 255).astype(np.uint8)  # 16 -> 8 bits
            image = Image.fromarray(array)
        elif image.mode not in ("L", "LA", "RGB", "RGBA"):
            has_alpha = "A" in image.getbands() or image.has_transparency_data
            image = image.convert("RGBA" if has_alpha else "RGB")
        factor = max(1, min(image.size[1] // (MARGIN * height), image.size[0] // (MARGIN * width)))
        array = np.asarray(image.reduce(factor) if factor > 1 else image, np.uint8)
    return array if array.ndim == 3 else array[..., None]
