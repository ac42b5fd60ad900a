"""Causal self-attention over a grid in raster order, for autoregressive priors.

VQ-VAE-2's top prior (Razavi et al. 2019, arXiv:1906.00446, section 3.3 and appendix A)
interleaves gated PixelCNN blocks with multi-head self-attention, which gives every position the
whole past at once instead of through a stack of k x k windows (after PixelSNAIL, Chen et al. 2018).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from vqvae_tf.layers import SERIALIZATION_PACKAGE as _PACKAGE


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CausalSelfAttention(keras.layers.Layer):
    """x + MHA(LayerNorm(x) + position) over the raster order of an (h, w) grid, each position
    attending to itself and every earlier one.

    Causal for a PixelCNN's horizontal stack: its output at a position depends only on the codes
    before it, so attending to positions <= t keeps that true.

    Args:
      grid_shape: (h, w) of the grid.
      num_heads: attention heads; the channels (known at build) must be divisible by it.
    """

    def __init__(self, grid_shape, num_heads: int = 4, **kwargs):
        super().__init__(**kwargs)
        self.grid_shape = tuple(int(s) for s in grid_shape)
        self.num_heads = int(num_heads)
        self.norm = keras.layers.LayerNormalization(name="norm")

    def build(self, input_shape):
        channels = int(input_shape[-1])
        if channels % self.num_heads:
            raise ValueError(f"{channels} channels are not divisible by num_heads={self.num_heads}.")
        h, w = self.grid_shape
        self.position = self.add_weight(
            shape=(h * w, channels), initializer=keras.initializers.RandomNormal(stddev=0.02), name="position"
        )
        self.norm.build((None, h * w, channels))
        self.attention = keras.layers.MultiHeadAttention(self.num_heads, channels // self.num_heads, name="mha")
        self.attention.build((None, h * w, channels), (None, h * w, channels))

    def call(self, x):
        h, w = self.grid_shape
        shape = tf.shape(x)
        flat = tf.reshape(x, [shape[0], h * w, shape[-1]])
        y = self.norm(flat) + tf.cast(self.position, flat.dtype)
        y = self.attention(y, y, use_causal_mask=True)
        return x + tf.reshape(y, shape)

    def get_config(self):
        return dict(super().get_config(), grid_shape=list(self.grid_shape), num_heads=self.num_heads)
