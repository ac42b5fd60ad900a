"""Autoencoders by name: the `model` a VQ-VAE config names ("vqvae", "vqvae2"), its Keras class, and
what the stages ask of it, declared beside the class with one decorator:

    @register_autoencoder("vqvae2")
    class VQVAE2(ImageAutoencoder):
        title = "VQ-VAE-2"
        prior_family = "hierarchical"

and one import line in `models/autoencoders/__init__.py`. The class keeps `ImageAutoencoder`'s
code-grids API; the training stage, the codes export (which records `model_name` and
`prior_family` in meta.json), the SavedModel signatures, TFLite, presets and the report run on it.
Its config class (`configs.classes`, `model` = the name) holds the fields its constructor takes.
This module imports no model.
"""

from __future__ import annotations

from vqvae_tf.utils.registry import Registry

_AUTOENCODERS = Registry("autoencoder", "model")


def register_autoencoder(name: str):
    """Class decorator: registers an autoencoder class under `name` (its `model_name`)."""

    def decorator(cls):
        _AUTOENCODERS.add(name, cls)
        cls.model_name = name
        return cls

    return decorator


def names() -> tuple:
    return _AUTOENCODERS.names()


def get(name: str):
    """The autoencoder class registered as `name`."""
    return _AUTOENCODERS.get(name)


def model_classes() -> dict:
    """{class name: class} of every autoencoder (what a preset's config.json may hold)."""
    return {cls.__name__: cls for cls in _AUTOENCODERS.values()}
