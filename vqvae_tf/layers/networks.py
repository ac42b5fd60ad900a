"""The encoder/decoder networks an autoencoder can be built with, registered by name.

A network is an encoder (centred images ``[B,H,W,C]`` in [-0.5, 0.5] -> z_e ``[B,h,w,D]``) and a
decoder (z_q ``[B,h,w,D]`` -> ``[B,H,W,out_channels]`` centred at 0, which the model shifts by 0.5),
made from the model's arguments. `VQVAE(network=...)` takes its name; its options live in the
model's ``network_options`` dict (None: the network's defaults).

Registered: "vqvae" (`encoder_decoder.py`: the paper's strided convolutions and residual stack,
the default) and "taming" (`taming.py`: VQGAN's and diffusers' `VQModel` GroupNorm ResNet with
attention, the network of the field's pretrained tokenizers).

Add one: a module with a `Network` subclass decorated with ``@register_network("<name>")`` and an
import at the bottom of this file.
"""

from __future__ import annotations

from vqvae_tf.utils.registry import Registry

_NETWORKS = Registry("network")


class Network:
    """What a network says of itself. Subclasses define `build` and may define `validate`,
    `downsample` and `canonical_options`."""

    name = ""

    @staticmethod
    def build(arguments: dict, options: dict, embedding_dim: int, out_channels: int) -> tuple:
        """(encoder, decoder) Keras layers for the model's `arguments` and the network's `options`."""
        raise NotImplementedError

    @staticmethod
    def canonical_options(options) -> dict | None:
        """`options` with every default filled in and JSON types (lists), as get_config keeps
        them; raises ValueError naming a bad or unknown option."""
        if options:
            raise ValueError(f"network_options are not taken by this network, got {sorted(options)}.")
        return None

    @staticmethod
    def downsample(arguments: dict, options: dict | None) -> int:
        """The factor from image to code grid."""
        return arguments["downsample"]

    @staticmethod
    def validate(arguments: dict, options: dict | None) -> None:
        """Raises ValueError naming a bad argument (after `canonical_options`)."""


def register_network(name: str):
    """Class decorator: registers a `Network` subclass under `name`."""

    def wrap(cls):
        _NETWORKS.add(name, cls)
        cls.name = name
        return cls

    return wrap


def names() -> tuple:
    return _NETWORKS.names()


def get(name: str) -> type[Network]:
    """The registered network `name`; a ValueError lists the known ones."""
    return _NETWORKS.get(name)


# The registrations (each module decorates its Network with register_network).
from vqvae_tf.layers import encoder_decoder as _encoder_decoder  # noqa: E402,F401
from vqvae_tf.layers import taming as _taming  # noqa: E402,F401
