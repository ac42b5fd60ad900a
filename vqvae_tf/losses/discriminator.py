"""The PatchGAN discriminator of pix2pix and VQGAN (taming-transformers' NLayerDiscriminator).

A stack of 4x4 convolutions: `num_layers` of stride 2 (the first without normalisation), one of
stride 1, and a 4x4 stride-1 convolution to one logit per patch; LeakyReLU(0.2) between them and no
sigmoid (the hinge loss takes raw logits). Widths start at `filters` and double per layer up to
8x. As taming's: every convolution pads 1 px and is otherwise unpadded (a side of n gives
floor((n - 2) / 2) + 1 after a stride-2 layer and n - 1 after a stride-1 one: 6x6 logits at 64 px,
30x30 at 256), kernels start N(0, 0.02) and norm scales N(1, 0.02) (taming's `weights_init`).
Where taming normalises with BatchNorm, this uses GroupNorm (32 groups, or fewer for narrow
layers): it has no batch statistics, so a step under MirroredStrategy equals one replica's and
real and reconstructed batches are normalised alike.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from vqvae_tf.layers import SERIALIZATION_PACKAGE


def _pad_1px(x):
    """x [B,H,W,C] with 1 zero pixel on each side (PyTorch's Conv2d(padding=1), taming's)."""
    return tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])


def _groups(width: int) -> int:
    groups = 32
    while width % groups:
        groups //= 2
    return groups


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class NLayerDiscriminator(keras.Model):
    """images float [B,H,W,C] in [0,1] -> patch logits float32 [B, h, w, 1].

    Args:
      num_layers: stride-2 convolutions (taming's n_layers, default 3: patches of 70 px at 256).
      filters: width of the first layer (taming's ndf, 64).
    """

    def __init__(self, num_layers: int = 3, filters: int = 64, **kwargs):
        if int(num_layers) < 1:
            raise ValueError(f"disc_layers must be >= 1, got {num_layers}.")
        if int(filters) < 1:
            raise ValueError(f"disc_filters must be >= 1, got {filters}.")
        super().__init__(name=kwargs.pop("name", "discriminator"), **kwargs)
        self.num_layers, self.filters = int(num_layers), int(filters)
        self.blocks = []
        kernel = keras.initializers.RandomNormal(stddev=0.02)
        for i in range(self.num_layers + 1):
            width = self.filters * min(2**i, 8)
            # A convolution followed by a norm has no bias (the norm would remove it), as in taming.
            conv = keras.layers.Conv2D(
                width,
                4,
                strides=2 if i < self.num_layers else 1,
                use_bias=i == 0,
                kernel_initializer=kernel,
                name=f"conv{i}",
            )
            norm = (
                keras.layers.GroupNormalization(
                    _groups(width), gamma_initializer=keras.initializers.RandomNormal(1.0, 0.02), name=f"norm{i}"
                )
                if i
                else None
            )
            self.blocks.append((conv, norm))
        self.logits = keras.layers.Conv2D(1, 4, kernel_initializer=kernel, name="logits")

    @staticmethod
    def logits_size(size: int, num_layers: int) -> int:
        """The logits' side for an image side `size` (taming's padding: 1 px, 4x4 kernels)."""
        for _ in range(num_layers):
            size = (size - 2) // 2 + 1
        return size - 2  # the stride-1 layer and the logits, n - 1 each

    @staticmethod
    def min_image_size(num_layers: int) -> int:
        """The smallest image side that leaves one logit."""
        size = 1
        while NLayerDiscriminator.logits_size(size, num_layers) < 1:
            size += 1
        return size

    def call(self, images, training=False):
        x = tf.cast(images, self.compute_dtype) * 2.0 - 1.0
        for conv, norm in self.blocks:
            x = conv(_pad_1px(x))
            if norm is not None:
                x = norm(x)
            x = keras.ops.leaky_relu(x, 0.2)
        return tf.cast(self.logits(_pad_1px(x)), tf.float32)

    def get_config(self):
        return {"num_layers": self.num_layers, "filters": self.filters, "name": self.name}
