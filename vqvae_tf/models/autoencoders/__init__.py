"""Autoencoders, one per file, each registered by name (`registry`; a config's `model`):

    base.py      ImageAutoencoder: what every autoencoder shares, the code-grids API
    registry.py  register_autoencoder, get(name), model_classes
    vqvae.py     VQVAE ("vqvae"): one code grid, its quantizer by name or instance
    vqvae2.py    VQVAE2 ("vqvae2"): top and bottom code grids

A new autoencoder: one file with an `ImageAutoencoder` subclass decorated with
`@register_autoencoder`, one import line below, and its config class in `configs/classes.py`.
"""

# The zoo's autoencoders (each import registers one).
from vqvae_tf.models.autoencoders import vqvae, vqvae2  # noqa: E402, I001
from vqvae_tf.models.autoencoders.registry import get, model_classes, names, register_autoencoder

__all__ = ["get", "model_classes", "names", "register_autoencoder", "vqvae", "vqvae2"]
