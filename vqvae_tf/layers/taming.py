"""The "taming" network: VQGAN's encoder and decoder, as taming-transformers and diffusers'
`VQModel` build them (Esser, Rombach, Ommer 2021, arXiv:2012.09841; the LDM VQ-f4/f8 first
stages, aMUSEd's VQ-GAN and, with ``norm_type="spatial"``, Kandinsky's MoVQ, arXiv:2209.09002).

Encoder: conv_in 3x3; per level, `layers_per_block` ResNet blocks (GroupNorm, swish, 3x3, twice;
a 1x1 shortcut where the width changes), each followed by self-attention where the level has it,
then (but at the last level) a stride-2 3x3 convolution on the input padded by one row and column
at the bottom and right; a middle of ResNet, attention (optional), ResNet; GroupNorm, swish,
conv_out 3x3 to `latent_channels`; quant_conv 1x1 to the codebook's D.
Decoder: post_quant_conv 1x1, conv_in 3x3, the middle, per level from the deepest
`layers_per_block + 1` ResNet blocks (and attention), nearest 2x upsampling and a 3x3 convolution
(but at the last level), then the norm, swish and conv_out 3x3. With ``norm_type="spatial"``
every decoder norm is MoVQ's spatial norm: GroupNorm(32, 1e-6) of the features times a 1x1
convolution of z_q, plus another, z_q upsampled to the features' size.

The reference computes on images in [-1, 1]: the encoder doubles the zoo's centred input and the
decoder halves its output, so the model's [0, 1] images map exactly to the reference's.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from vqvae_tf.layers import SERIALIZATION_PACKAGE as _PACKAGE
from vqvae_tf.layers.networks import Network, register_network

NORM_TYPES = ("group", "spatial")
# The options and their defaults (diffusers' VQModel's where it has them).
DEFAULTS = {
    "block_out_channels": [64],  # the width of each level; levels - 1 = log2(downsample)
    "layers_per_block": 1,  # ResNet blocks per encoder level (the decoder has one more)
    "down_attention": None,  # per encoder level: attention after each ResNet block (None: none)
    "up_attention": None,  # per decoder level, deepest first (as diffusers' up_block_types)
    "mid_attention": True,
    "norm_num_groups": 32,
    "norm_eps": 1e-6,
    "latent_channels": 3,  # the channels of conv_out (encoder) and conv_in's input (decoder)
    "norm_type": "group",
}
SPATIAL_NORM_GROUPS = 32  # fixed in MoVQ's SpatialNorm


def _conv(filters, kernel, name, strides=1, padding="same"):
    return keras.layers.Conv2D(filters, kernel, strides=strides, padding=padding, name=name)


def _upsample(x, factor):
    """Nearest-neighbour upsampling by an integer factor (torch's F.interpolate "nearest")."""
    return x if factor == 1 else keras.ops.repeat(keras.ops.repeat(x, factor, axis=1), factor, axis=2)


class _Block(keras.layers.Layer):
    """A layer of layers: built when called, its sub-layers on their first call inside it (Keras'
    default build would run `call` symbolically once per nesting level: 20 s for a small network)."""

    def build(self, x_shape, zq_shape=None):
        self.built = True


class GroupNorm(keras.layers.Layer):
    """GroupNorm of NHWC tensors (torch's `nn.GroupNorm`; Keras' `GroupNormalization` with the
    same `gamma` / `beta`), its statistics reduced over the contiguous axes: per channel over the
    positions, then per group over its channels. Keras' layer reduces a [B,H,W,G,C/G] view over
    axes (1,2,4), which TF's CPU kernels ran ~4x slower (10% of the LDM f4 decoder's time at
    256x256: BENCHMARKS section 13); this is the same two-pass arithmetic (the variance of the
    differences from the group mean), computed in float32."""

    def __init__(self, groups, epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.groups, self.epsilon = int(groups), float(epsilon)

    def build(self, input_shape):
        channels = int(input_shape[-1])
        if channels % self.groups:
            raise ValueError(f"GroupNorm of {channels} channels in {self.groups} groups: not divisible.")
        self.gamma = self.add_weight(shape=(channels,), initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=(channels,), initializer="zeros", name="beta")

    def _group_mean(self, per_channel):
        """[B, C] -> [B, 1, 1, C]: the mean of each channel's group, repeated over its channels."""
        c = per_channel.shape[-1]
        g = tf.reduce_mean(tf.reshape(per_channel, [-1, self.groups, c // self.groups]), -1, keepdims=True)
        return tf.reshape(g * tf.ones([1, 1, c // self.groups]), [-1, 1, 1, c])

    def call(self, x):
        dtype = x.dtype
        x = tf.cast(x, tf.float32)
        mean = self._group_mean(tf.reduce_mean(x, [1, 2]))
        variance = self._group_mean(tf.reduce_mean(tf.math.squared_difference(x, mean), [1, 2]))
        scale = tf.math.rsqrt(variance + self.epsilon) * tf.cast(self.gamma, tf.float32)
        y = x * scale + (tf.cast(self.beta, tf.float32) - mean * scale)
        if None not in x.shape[1:]:  # (restated: the TFLite converter loses H and W in that broadcast,
            y = tf.reshape(y, [-1, *x.shape[1:]])  # then cannot convert the upsampling convolutions)
        return tf.cast(y, dtype)

    def get_config(self):
        return dict(super().get_config(), groups=self.groups, epsilon=self.epsilon)


class _Norm(_Block):
    """GroupNorm of `channels`, or, `spatial`, MoVQ's spatial norm conditioned on z_q."""

    def __init__(self, channels, groups, eps, spatial=False, **kwargs):
        super().__init__(**kwargs)
        self.spatial = spatial
        self.norm = GroupNorm(SPATIAL_NORM_GROUPS if spatial else groups, epsilon=eps, name="norm")
        if spatial:
            self.conv_y = _conv(channels, 1, "conv_y")
            self.conv_b = _conv(channels, 1, "conv_b")

    def call(self, x, zq=None):
        h = self.norm(x)
        if not self.spatial:
            return h
        zq = _upsample(zq, x.shape[1] // zq.shape[1])
        return h * self.conv_y(zq) + self.conv_b(zq)


class _ResnetBlock(_Block):
    def __init__(self, in_channels, out_channels, groups, eps, spatial=False, **kwargs):
        super().__init__(**kwargs)
        self.norm1 = _Norm(in_channels, groups, eps, spatial, name="norm1")
        self.conv1 = _conv(out_channels, 3, "conv1")
        self.norm2 = _Norm(out_channels, groups, eps, spatial, name="norm2")
        self.conv2 = _conv(out_channels, 3, "conv2")
        self.shortcut = _conv(out_channels, 1, "shortcut") if in_channels != out_channels else None

    def call(self, x, zq=None):
        h = self.conv1(keras.ops.silu(self.norm1(x, zq)))
        h = self.conv2(keras.ops.silu(self.norm2(h, zq)))
        return (x if self.shortcut is None else self.shortcut(x)) + h


class _Attention(_Block):
    """One-head self-attention over the positions, with a residual connection."""

    def __init__(self, channels, groups, eps, spatial=False, **kwargs):
        super().__init__(**kwargs)
        self.norm = _Norm(channels, groups, eps, spatial, name="norm")
        self.q, self.k, self.v, self.proj = (keras.layers.Dense(channels, name=n) for n in ("q", "k", "v", "proj"))

    def call(self, x, zq=None):
        _, h, w, c = x.shape
        flat = keras.ops.reshape(self.norm(x, zq), [-1, h * w, c])
        q, k, v = self.q(flat), self.k(flat), self.v(flat)
        scores = keras.ops.matmul(q, keras.ops.transpose(k, [0, 2, 1])) * (float(c) ** -0.5)
        weights = keras.ops.cast(keras.ops.softmax(keras.ops.cast(scores, "float32"), axis=-1), v.dtype)  # (upcast)
        return x + keras.ops.reshape(self.proj(keras.ops.matmul(weights, v)), [-1, h, w, c])


class _Level(_Block):
    """ResNet blocks (each followed by attention where asked), then a resampling convolution or none."""

    def __init__(self, in_channels, channels, num_blocks, attention, resample, groups, eps, spatial=False, **kwargs):
        super().__init__(**kwargs)
        self.resample = resample
        self.blocks = [
            _ResnetBlock(in_channels if i == 0 else channels, channels, groups, eps, spatial, name=f"block{i}")
            for i in range(num_blocks)
        ]
        self.attentions = [
            _Attention(channels, groups, eps, spatial, name=f"attn{i}") for i in range(num_blocks if attention else 0)
        ]
        strides, padding = (2, "valid") if resample == "down" else (1, "same")
        self.conv = _conv(channels, 3, "resample", strides, padding) if resample else None

    def call(self, x, zq=None):
        for i, block in enumerate(self.blocks):
            x = block(x, zq)
            if self.attentions:
                x = self.attentions[i](x, zq)
        if self.resample == "down":  # (torch pads one row and column at the bottom and right)
            x = self.conv(keras.ops.pad(x, [[0, 0], [0, 1], [0, 1], [0, 0]]))
        elif self.resample == "up":
            x = self.conv(_upsample(x, 2))
        return x


class _Middle(_Block):
    def __init__(self, channels, attention, groups, eps, spatial=False, **kwargs):
        super().__init__(**kwargs)
        self.block1 = _ResnetBlock(channels, channels, groups, eps, spatial, name="block1")
        self.attention = _Attention(channels, groups, eps, spatial, name="attn") if attention else None
        self.block2 = _ResnetBlock(channels, channels, groups, eps, spatial, name="block2")

    def call(self, x, zq=None):
        x = self.block1(x, zq)
        if self.attention is not None:
            x = self.attention(x, zq)
        return self.block2(x, zq)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class TamingEncoder(keras.layers.Layer):
    """Centred images ``[B,H,W,C]`` (the zoo's [-0.5, 0.5]) -> z_e ``[B, H/f, W/f, embedding_dim]``,
    f = 2^(levels - 1). `options`: this module's `DEFAULTS` keys (`canonical_options`)."""

    def __init__(self, options: dict, embedding_dim: int, **kwargs):
        super().__init__(**kwargs)
        self.options = options = canonical_options(options)
        self.embedding_dim = embedding_dim
        channels, n = options["block_out_channels"], len(options["block_out_channels"])
        groups, eps = options["norm_num_groups"], options["norm_eps"]
        self.conv_in = _conv(channels[0], 3, "conv_in")
        self.levels = [
            _Level(channels[max(i - 1, 0)], c, options["layers_per_block"], options["down_attention"][i],
                   "down" if i < n - 1 else None, groups, eps, name=f"down{i}")
            for i, c in enumerate(channels)
        ]  # fmt: skip
        self.middle = _Middle(channels[-1], options["mid_attention"], groups, eps, name="mid")
        self.norm_out = _Norm(channels[-1], groups, eps, name="norm_out")
        self.conv_out = _conv(options["latent_channels"], 3, "conv_out")
        self.quant_conv = _conv(embedding_dim, 1, "quant_conv")

    def build(self, input_shape):
        self.built = True  # (the sub-layers build on the first call: see _Block)

    def call(self, x):
        x = self.conv_in(2.0 * x)
        for level in self.levels:
            x = level(x)
        x = self.norm_out(self.middle(x))
        return self.quant_conv(self.conv_out(keras.ops.silu(x)))

    def get_config(self):
        return dict(super().get_config(), options=self.options, embedding_dim=self.embedding_dim)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class TamingDecoder(keras.layers.Layer):
    """z_q ``[B,h,w,D]`` -> ``[B, h*f, w*f, output_channels]``, halved (the zoo's centred scale)."""

    def __init__(self, options: dict, output_channels: int, **kwargs):
        super().__init__(**kwargs)
        self.options = options = canonical_options(options)
        self.output_channels = output_channels
        channels, n = options["block_out_channels"], len(options["block_out_channels"])
        groups, eps = options["norm_num_groups"], options["norm_eps"]
        self.spatial = zq = options["norm_type"] == "spatial"
        self.post_quant_conv = _conv(options["latent_channels"], 1, "post_quant_conv")
        self.conv_in = _conv(channels[-1], 3, "conv_in")
        self.middle = _Middle(channels[-1], options["mid_attention"], groups, eps, zq, name="mid")
        self.levels = [
            _Level(channels[min(n - j, n - 1)], channels[n - 1 - j], options["layers_per_block"] + 1,
                   options["up_attention"][j], "up" if j < n - 1 else None, groups, eps, zq, name=f"up{j}")
            for j in range(n)
        ]  # fmt: skip
        self.norm_out = _Norm(channels[0], groups, eps, zq, name="norm_out")
        self.conv_out = _conv(output_channels, 3, "conv_out")

    def build(self, input_shape):
        self.built = True

    def call(self, zq):
        cond = zq if self.spatial else None
        x = self.middle(self.conv_in(self.post_quant_conv(zq)), cond)
        for level in self.levels:
            x = level(x, cond)
        x = self.conv_out(keras.ops.silu(self.norm_out(x, cond)))
        return 0.5 * x

    def get_config(self):
        return dict(super().get_config(), options=self.options, output_channels=self.output_channels)


def canonical_options(options) -> dict:
    """`options` (None or a dict of `DEFAULTS` keys) with every default filled in, lists for
    sequences and the attention flags one per level; a ValueError names a bad option."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"Unknown taming network options {unknown}; known: {sorted(DEFAULTS)}.")
    out = {**DEFAULTS, **options}
    channels = out["block_out_channels"]
    if not channels or not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in channels):
        raise ValueError(f"block_out_channels must be a non-empty list of positive ints, got {channels!r}.")
    out["block_out_channels"] = [int(c) for c in channels]
    n = len(channels)
    for name in ("down_attention", "up_attention"):
        flags = [False] * n if out[name] is None else [bool(f) for f in out[name]]
        if len(flags) != n:
            raise ValueError(f"{name} must have one flag per level ({n}), got {out[name]!r}.")
        out[name] = flags
    for name in ("layers_per_block", "latent_channels", "norm_num_groups"):
        v = out[name]
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}.")
    if not (isinstance(out["norm_eps"], (int, float)) and out["norm_eps"] > 0):
        raise ValueError(f"norm_eps must be > 0, got {out['norm_eps']!r}.")
    out["norm_eps"] = float(out["norm_eps"])
    out["mid_attention"] = bool(out["mid_attention"])
    if out["norm_type"] not in NORM_TYPES:
        raise ValueError(f"norm_type must be one of {NORM_TYPES}, got {out['norm_type']!r}.")
    groups = SPATIAL_NORM_GROUPS if out["norm_type"] == "spatial" else out["norm_num_groups"]
    for c in channels:
        if c % out["norm_num_groups"] or c % groups:
            raise ValueError(
                f"every block_out_channels entry must divide into norm_num_groups={groups} groups, got {c}."
            )
    return out


@register_network("taming")
class TamingNetwork(Network):
    """VQGAN's / diffusers' VQModel's network (`TamingEncoder`, `TamingDecoder`); its options are
    `DEFAULTS`'s keys; the model's ``num_hiddens`` and residual widths are not used, and its
    ``downsample`` must be 2^(levels - 1)."""

    @staticmethod
    def build(arguments, options, embedding_dim, out_channels):
        return (
            TamingEncoder(options, embedding_dim, name="encoder"),
            TamingDecoder(options, out_channels, name="decoder"),
        )

    @staticmethod
    def canonical_options(options):
        return canonical_options(options)

    @staticmethod
    def downsample(arguments, options):
        return 2 ** (len(canonical_options(options)["block_out_channels"]) - 1)

    @staticmethod
    def validate(arguments, options):
        f = 2 ** (len(options["block_out_channels"]) - 1)  # (options: canonical already)
        if arguments["downsample"] != f:
            raise ValueError(
                f"downsample={arguments['downsample']} does not match the taming network's "
                f"{len(options['block_out_channels'])} levels: it must be {f}."
            )
