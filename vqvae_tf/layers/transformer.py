"""A pre-norm transformer block for priors over code grids, with a one-position step on a key/value
cache for autoregressive sampling.

    x = x + Dropout(Proj(Attention(LayerNorm(x))))        causal (autoregressive) or not (MaskGIT)
    x = x + Dropout(MLP(LayerNorm(x)))                     MLP: Dense(r D, gelu) -> Dense(D)

As GPT-2 / VQGAN's transformer (taming-transformers' mingpt) and LlamaGen, without their extras.
`step` runs the block on the one token at `position` against per-layer caches of the keys and
values of every earlier position, so that sampling a grid of T codes costs T one-token passes
instead of T whole-sequence passes; it computes what `call` computes at that position.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from vqvae_tf.layers import SERIALIZATION_PACKAGE as _PACKAGE
from vqvae_tf.utils import checks

# Added to the scores of the positions a query may not see (finite: a fully masked row stays finite).
MASKED = -1e9


@keras.saving.register_keras_serializable(package=_PACKAGE)
class TransformerBlock(keras.layers.Layer):
    """One pre-norm block over ``[B, T, D]`` (see the module).

    Args:
      num_heads: attention heads; D (known at build) must be divisible by it.
      mlp_ratio: the MLP's hidden width over D.
      dropout: after the attention's projection and after the MLP (training only).
      causal: position t attends to positions <= t (an autoregressive prior), else to all.
    """

    def __init__(self, num_heads: int = 4, mlp_ratio: int = 4, dropout: float = 0.0, causal: bool = True, **kwargs):
        super().__init__(**kwargs)
        checks.positive_int("num_heads", num_heads)
        checks.positive_int("mlp_ratio", mlp_ratio)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        self.num_heads, self.mlp_ratio, self.dropout, self.causal = int(num_heads), int(mlp_ratio), dropout, causal
        self.norm_attention = keras.layers.LayerNormalization(epsilon=1e-5, name="norm_attention")
        self.norm_mlp = keras.layers.LayerNormalization(epsilon=1e-5, name="norm_mlp")
        self.drop = keras.layers.Dropout(dropout)

    def build(self, input_shape):
        width = int(input_shape[-1])
        if width % self.num_heads:
            raise ValueError(f"The width {width} is not divisible by num_heads={self.num_heads}.")
        self.width, self.head_width = width, width // self.num_heads
        self.qkv = keras.layers.Dense(3 * width, name="qkv")
        self.proj = keras.layers.Dense(width, name="proj")
        self.fc1 = keras.layers.Dense(self.mlp_ratio * width, activation="gelu", name="fc1")
        self.fc2 = keras.layers.Dense(width, name="fc2")
        for layer, shape in (
            (self.norm_attention, width),
            (self.qkv, width),
            (self.proj, width),
            (self.norm_mlp, width),
            (self.fc1, width),
            (self.fc2, self.mlp_ratio * width),
        ):
            layer.build((None, shape))
        self.built = True

    def _split(self, x):
        """[..., 3D] -> q, k, v each [..., H, D / H]."""
        shape = tf.concat([tf.shape(x)[:-1], [self.num_heads, self.head_width]], 0)
        return [tf.reshape(t, shape) for t in tf.split(x, 3, axis=-1)]

    def _mlp(self, x, training=False):
        return x + self.drop(self.fc2(self.fc1(self.norm_mlp(x))), training=training)

    def call(self, x, training=False):
        """x [B, T, D] -> [B, T, D]."""
        q, k, v = self._split(self.qkv(self.norm_attention(x)))  # [B, T, H, dh]
        scores = tf.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(self.head_width)
        scores = tf.cast(scores, tf.float32)
        if self.causal:
            length = tf.shape(x)[1]
            visible = tf.linalg.band_part(tf.ones([length, length], tf.bool), -1, 0)
            scores = tf.where(visible, scores, MASKED)
        weights = tf.cast(tf.nn.softmax(scores, axis=-1), v.dtype)
        attended = tf.einsum("bhqk,bkhd->bqhd", weights, v)
        attended = tf.reshape(attended, tf.shape(x))
        x = x + self.drop(self.proj(attended), training=training)
        return self._mlp(x, training)

    def empty_cache(self, batch_size, length, dtype=tf.float32):
        """Zero key and value caches for `length` positions: two ``[B, H, T, dh]`` tensors."""
        shape = tf.stack([batch_size, self.num_heads, length, self.head_width])
        return tf.zeros(shape, dtype), tf.zeros(shape, dtype)

    def step(self, x, keys, values, position):
        """The block at one position: x [B, D] (the token at `position`, an int32 scalar), the
        caches of `empty_cache` holding the positions before it -> (output [B, D], the caches with
        this position's key and value written in). Causal blocks only."""
        q, k, v = self._split(self.qkv(self.norm_attention(x)))  # [B, H, dh]
        length = keys.shape[2] if keys.shape[2] is not None else tf.shape(keys)[2]
        at = tf.one_hot(position, length, dtype=keys.dtype)[None, None, :, None]  # [1, 1, T, 1]
        keys = keys + at * tf.cast(k, keys.dtype)[:, :, None, :]
        values = values + at * tf.cast(v, values.dtype)[:, :, None, :]
        # Batched matrix-vector products per head (BatchMatMul: a einsum's transposes cost more).
        scores = tf.matmul(tf.cast(q, keys.dtype)[:, :, None, :], keys, transpose_b=True)[:, :, 0]
        scores = scores / math.sqrt(self.head_width)
        seen = tf.range(length) <= position
        scores = tf.where(seen[None, None, :], tf.cast(scores, tf.float32), MASKED)
        weights = tf.cast(tf.nn.softmax(scores, axis=-1), values.dtype)
        attended = tf.reshape(tf.matmul(weights[:, :, None, :], values)[:, :, 0], tf.shape(x))
        x = x + self.proj(tf.cast(attended, x.dtype))
        return self._mlp(x), keys, values

    def get_config(self):
        return dict(
            super().get_config(),
            num_heads=self.num_heads,
            mlp_ratio=self.mlp_ratio,
            dropout=self.dropout,
            causal=self.causal,
        )


def sized_from_prior_config(num_filters: int, num_layers: int | None) -> dict:
    """A transformer prior's width, blocks and heads from a prior config's `num_filters` (the width)
    and `num_layers` (None: 4): 4 heads, fewer when the width is not divisible by 4."""
    return dict(
        width=num_filters,
        num_layers=num_layers or 4,
        num_heads=next(h for h in (4, 2, 1) if num_filters % h == 0),
    )


class TransformerTrunk:
    """Mixin for the transformer priors: `_check_trunk` checks and keeps the arguments they share,
    `_make_trunk` makes their blocks, final LayerNorm and linear head (after the prior's own
    embeddings, so the weights keep their order), `_trunk_config` is their part of get_config."""

    def _check_trunk(self, num_embeddings, width, num_layers, num_heads, mlp_ratio, dropout, num_classes, depth):
        for name, value in (("num_embeddings", num_embeddings), ("width", width), ("num_layers", num_layers)):
            checks.positive_int(name, value)
        checks.positive_int("depth", depth)
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}.")
        if width % num_heads:
            raise ValueError(f"width={width} must be divisible by num_heads={num_heads}.")
        self.num_embeddings, self.width, self.num_layers = int(num_embeddings), int(width), int(num_layers)
        self.num_heads, self.mlp_ratio, self.dropout = int(num_heads), int(mlp_ratio), float(dropout)
        self.num_classes, self.depth = int(num_classes), int(depth)

    def _make_trunk(self, causal: bool):
        self.input_dropout = keras.layers.Dropout(self.dropout)
        self.blocks = [
            TransformerBlock(self.num_heads, self.mlp_ratio, self.dropout, causal=causal, name=f"block_{i}")
            for i in range(self.num_layers)
        ]
        self.final_norm = keras.layers.LayerNormalization(epsilon=1e-5, name="final_norm")
        self.head = keras.layers.Dense(self.num_embeddings * self.depth, name="head")

    def _build_trunk(self):
        for block in self.blocks:
            block.build((None, None, self.width))
        self.final_norm.build((None, self.width))
        self.head.build((None, self.width))

    def _trunk_config(self) -> dict:
        return dict(
            num_embeddings=self.num_embeddings,
            latent_shape=list(self.latent_shape),
            width=self.width,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            mlp_ratio=self.mlp_ratio,
            dropout=self.dropout,
            num_classes=self.num_classes,
            depth=self.depth,
        )
