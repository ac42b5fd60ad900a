"""Encoder and decoder of VQ-VAE (arXiv:1711.00937, section 4.1; widths as in Sonnet's example).

Encoder: log2(downsample) strided 4x4 convolutions (stride 2, ReLU), a 3x3 convolution, a stack of
residual blocks (ReLU, 3x3, ReLU, 1x1) and a 1x1 projection to `embedding_dim`.
Decoder: a 3x3 convolution, the residual stack, then strided 4x4 transposed convolutions back to
the image size.
"""

from __future__ import annotations

import math

import keras

from vqvae_tf.layers import SERIALIZATION_PACKAGE as _PACKAGE
from vqvae_tf.layers.networks import Network, register_network

DOWNSAMPLE_FACTORS = (2, 4, 8)


def _num_strided(downsample: int) -> int:
    if downsample not in DOWNSAMPLE_FACTORS:
        raise ValueError(f"downsample must be one of {DOWNSAMPLE_FACTORS}, got {downsample!r}.")
    return int(math.log2(downsample))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ResidualStack(keras.layers.Layer):
    """`num_residual_layers` blocks of x + conv1x1(relu(conv3x3(relu(x)))), then a ReLU.

    Args:
      num_hiddens: channels of the input and output.
      num_residual_hiddens: channels inside each block.
      num_residual_layers: number of blocks.
    """

    def __init__(self, num_hiddens: int, num_residual_hiddens: int, num_residual_layers: int, **kwargs):
        super().__init__(**kwargs)
        self.num_hiddens = num_hiddens
        self.num_residual_hiddens = num_residual_hiddens
        self.num_residual_layers = num_residual_layers
        self.blocks = [
            (
                keras.layers.Conv2D(num_residual_hiddens, 3, padding="same", name=f"res{i}_3x3"),
                keras.layers.Conv2D(num_hiddens, 1, name=f"res{i}_1x1"),
            )
            for i in range(num_residual_layers)
        ]

    def build(self, input_shape):
        shape = tuple(input_shape)
        for conv3, conv1 in self.blocks:
            conv3.build(shape)
            conv1.build(shape[:-1] + (self.num_residual_hiddens,))

    def call(self, x):
        for i, (conv3, conv1) in enumerate(self.blocks):
            # A later block's input ReLU is written as max(x, 0): Grappler's remapper fuses
            # Conv2D + BiasAdd + Add + Relu even when the Add also feeds the next residual sum,
            # then fails ("remapper failed: ... fanout ... exist for missing node '.../add'") and
            # drops every fusion of the graph. The same function; the train step is a little faster.
            h = conv3(keras.ops.maximum(x, 0.0) if i else keras.ops.relu(x))
            x = x + conv1(keras.ops.relu(h))
        return keras.ops.relu(x)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_hiddens=self.num_hiddens,
            num_residual_hiddens=self.num_residual_hiddens,
            num_residual_layers=self.num_residual_layers,
        )
        return config


class _ConvNet(keras.layers.Layer):
    """What the encoder and decoder share: log2(`downsample`) stride-2 4x4 (transposed)
    convolutions, a 3x3 convolution to `num_hiddens` channels and a `ResidualStack`."""

    def __init__(self, num_hiddens, num_residual_hiddens, num_residual_layers, downsample, **kwargs):
        super().__init__(**kwargs)
        self.num_strided = _num_strided(downsample)
        self.num_hiddens = num_hiddens
        self.num_residual_hiddens = num_residual_hiddens
        self.num_residual_layers = num_residual_layers
        self.downsample = downsample

    def _trunk(self):
        """The 3x3 convolution and the residual stack. Subclasses create their layers in a fixed
        order (the order of the random initialisation, so of every trained result)."""
        self.conv3 = keras.layers.Conv2D(self.num_hiddens, 3, padding="same", name="conv3x3")
        self.residual = ResidualStack(
            self.num_hiddens, self.num_residual_hiddens, self.num_residual_layers, name="residual"
        )

    def _strided(self, layer_cls, last_channels, last_activation, prefix):
        """The stride-2 layers: all ReLU with num_hiddens // 2 channels but the last one."""
        n = self.num_strided
        return [
            layer_cls(
                last_channels if i == n - 1 else max(self.num_hiddens // 2, 1),
                4,
                strides=2,
                padding="same",
                activation=last_activation if i == n - 1 else "relu",
                name=f"{prefix}{i}",
            )
            for i in range(n)
        ]

    def get_config(self):
        config = super().get_config()
        config.update(
            num_hiddens=self.num_hiddens,
            num_residual_hiddens=self.num_residual_hiddens,
            num_residual_layers=self.num_residual_layers,
            downsample=self.downsample,
        )
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Encoder(_ConvNet):
    """images (float, centred, ``[B,H,W,C]``) -> z_e ``[B, H/downsample, W/downsample, embedding_dim]``.

    Args:
      num_hiddens: channels of the main path (the last strided conv and the residual stack).
      num_residual_hiddens, num_residual_layers: see `ResidualStack`.
      embedding_dim: channels of z_e (D).
      downsample: 2, 4 or 8 (number of stride-2 convolutions = log2(downsample)).

    The defaults are Sonnet's CIFAR-10 widths; `VQVAE` passes its own.
    """

    def __init__(
        self,
        num_hiddens: int = 128,
        num_residual_hiddens: int = 32,
        num_residual_layers: int = 2,
        embedding_dim: int = 64,
        downsample: int = 4,
        **kwargs,
    ):
        super().__init__(num_hiddens, num_residual_hiddens, num_residual_layers, downsample, **kwargs)
        self.embedding_dim = embedding_dim
        self.strided = self._strided(keras.layers.Conv2D, num_hiddens, "relu", "down")
        self._trunk()
        self.project = keras.layers.Conv2D(embedding_dim, 1, name="pre_vq_conv")

    def call(self, x):
        for conv in self.strided:
            x = conv(x)
        return self.project(self.residual(self.conv3(x)))

    def get_config(self):
        return dict(super().get_config(), embedding_dim=self.embedding_dim)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Decoder(_ConvNet):
    """z_q ``[B,h,w,D]`` -> ``[B, h*downsample, w*downsample, output_channels]`` (linear output).

    Args:
      output_channels: C for a mean output, 2C for (mean, log-scale) of a discretized likelihood.
      num_hiddens, num_residual_hiddens, num_residual_layers, downsample: as in `Encoder`.
    """

    def __init__(
        self,
        output_channels: int,
        num_hiddens: int = 128,
        num_residual_hiddens: int = 32,
        num_residual_layers: int = 2,
        downsample: int = 4,
        **kwargs,
    ):
        super().__init__(num_hiddens, num_residual_hiddens, num_residual_layers, downsample, **kwargs)
        self.output_channels = output_channels
        self._trunk()
        self.strided = self._strided(keras.layers.Conv2DTranspose, output_channels, None, "up")

    def call(self, x):
        x = self.residual(self.conv3(x))
        for conv in self.strided:
            x = conv(x)
        return x

    def get_config(self):
        return dict(super().get_config(), output_channels=self.output_channels)


@register_network("vqvae")
class ConvNetwork(Network):
    """The paper's network (`Encoder`, `Decoder`), sized by the model's ``num_hiddens``,
    ``num_residual_hiddens``, ``num_residual_layers`` and ``downsample``; no network_options."""

    @staticmethod
    def build(arguments, options, embedding_dim, out_channels):
        widths = (arguments["num_hiddens"], arguments["num_residual_hiddens"], arguments["num_residual_layers"])
        downsample = arguments["downsample"]
        encoder = Encoder(*widths, embedding_dim, downsample, name="encoder")
        decoder = Decoder(out_channels, *widths, downsample, name="decoder")
        return encoder, decoder

    @staticmethod
    def validate(arguments, options):
        _num_strided(arguments["downsample"])
