"""Image grids and small charts as PNG, without plotting libraries."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from vqvae_tf.utils import files


def to_uint8(images) -> np.ndarray:
    """float images in [0,1] (any of [N,H,W,C] / [H,W,C]) -> uint8."""
    x = np.asarray(images, dtype=np.float32)
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def grid(images, columns: int, pad: int = 2, scale: int = 1, pad_value: int = 255) -> np.ndarray:
    """uint8/float images [N,H,W,C] -> one uint8 image [rows*(H+pad)+pad, cols*(W+pad)+pad, C]."""
    x = images if np.asarray(images).dtype == np.uint8 else to_uint8(images)
    x = np.asarray(x)
    if scale > 1:
        x = x.repeat(scale, axis=1).repeat(scale, axis=2)
    n, h, w, c = x.shape
    rows = max(1, -(-n // columns))
    out = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, c), pad_value, np.uint8)
    for i in range(n):
        r, k = divmod(i, columns)
        out[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + k * (w + pad) : pad + k * (w + pad) + w] = x[i]
    return out


def comparison_grid(originals, reconstructions, columns: int = 8, scale: int = 2) -> np.ndarray:
    """Rows of `columns` originals, each followed by the row of their reconstructions."""
    originals, reconstructions = to_uint8(originals), to_uint8(reconstructions)
    n = (len(originals) // columns) * columns or len(originals)
    rows = []
    for start in range(0, n, columns):
        rows.append(originals[start : start + columns])
        rows.append(reconstructions[start : start + columns])
    return grid(np.concatenate(rows), columns, scale=scale)


def bar_chart(values, height: int = 160, bar_width: int = 3) -> np.ndarray:
    """A plain bar chart (white background, dark bars, grey baseline) of non-negative values."""
    v = np.asarray(values, dtype=np.float64)
    top = v.max() if v.size and v.max() > 0 else 1.0
    width = max(1, len(v)) * bar_width + 2
    img = np.full((height + 2, width, 3), 255, np.uint8)
    for i, value in enumerate(v):
        bar = int(round((height - 1) * value / top))
        if bar:
            img[height - bar : height, 1 + i * bar_width : 1 + (i + 1) * bar_width - (bar_width > 2)] = (40, 70, 160)
    img[height, :] = (128, 128, 128)
    return img


def write_png(path: str, image: np.ndarray) -> None:
    """Writes uint8 [H,W,C] (C in 1, 3, 4) atomically."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    files.atomic_write_bytes(path, tf.io.encode_png(image).numpy())
