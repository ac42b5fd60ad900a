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


def usage_profile(counts) -> tuple[np.ndarray, int, float]:
    """What `code_usage_chart` draws: (fraction of vectors per code, sorted descending; number of
    codes used; perplexity exp(entropy))."""
    counts = np.asarray(counts, np.float64)
    fraction = np.sort(counts)[::-1] / max(counts.sum(), 1.0)
    p = fraction[fraction > 0]
    return fraction, int((counts > 0).sum()), float(np.exp(-(p * np.log(p)).sum())) if p.size else 0.0


def code_usage_chart(counts, title: str = "Code usage") -> np.ndarray:
    """uint8 [H,W,3] chart of a codebook's usage: codes sorted by how often they are used (x: code
    rank), the fraction of vectors each one takes (y, log scale), the uniform level 1/K, the dead
    codes (never used) shaded at the right, and the perplexity and usage in the title."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fraction, used, perplexity = usage_profile(counts)
    k = len(fraction)
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100)
    try:
        ranks = np.arange(1, k + 1)
        ax.bar(ranks[:used], fraction[:used], width=1.0, color="#2d5aa0", label="fraction of vectors")
        ax.axhline(1.0 / k, color="#888888", linestyle="--", linewidth=1, label=f"uniform (1/K = 1/{k})")
        if used < k:
            ax.axvspan(used + 0.5, k + 0.5, color="#d62728", alpha=0.15, label=f"{k - used} dead codes (never used)")
        ax.set_yscale("log")
        ax.set_xlim(0.5, k + 0.5)
        ax.set_xlabel("code rank (most used first)")
        ax.set_ylabel("fraction of vectors (log)")
        ax.set_title(f"{title}\nperplexity {perplexity:.1f} of K = {k}; {used}/{k} codes used", fontsize=10)
        ax.legend(loc="upper right", fontsize=8)
        fig.tight_layout()
        fig.canvas.draw()
        return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    finally:
        plt.close(fig)


def write_png(path: str, image: np.ndarray) -> None:
    """Writes uint8 [H,W,C] (C in 1, 3, 4) atomically."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    files.atomic_write_bytes(path, tf.io.encode_png(image).numpy())
