"""Masked convolutions and the gated PixelCNN block.

"Conditional Image Generation with PixelCNN Decoders", van den Oord et al. 2016
(arXiv:1606.05328): a vertical stack (the rows above) and a horizontal stack (the current row, to
the left) remove the blind spot of plain masked stacks; gated activations tanh(a) * sigmoid(b)
(eq. 2); residual connections in the horizontal stack; an optional class embedding added in every
gated block (conditional PixelCNN, eq. 4).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from vqvae_tf.layers import SERIALIZATION_PACKAGE as _PACKAGE

MASK_TYPES = ("A", "B", "V")


def causal_mask(kernel_size, mask_type: str) -> np.ndarray:
    """[kh, kw] 0/1 mask. "A": positions strictly before the centre in raster order; "B": also
    the centre; "V" (vertical stack): every position in the centre row and the rows above."""
    kh, kw = kernel_size
    ch, cw = kh // 2, kw // 2
    mask = np.zeros((kh, kw), np.float32)
    mask[:ch, :] = 1.0
    if mask_type == "V":
        mask[ch, :] = 1.0
    else:
        mask[ch, :cw] = 1.0
        if mask_type == "B":
            mask[ch, cw] = 1.0
    return mask


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MaskedConv2D(keras.layers.Conv2D):
    """A 'same'-padded Conv2D whose kernel is multiplied by a constant causal mask in the forward
    pass (the kernel variable itself is never modified).

    Args:
      filters, kernel_size: as `keras.layers.Conv2D` (odd kernel sizes).
      mask_type: "A" (excludes the centre: first layer), "B" (includes it) or "V" (vertical stack:
        current and earlier rows).
      **kwargs: other `Conv2D` arguments (strides and dilation must stay 1).

    Example:
    >>> conv = MaskedConv2D(8, 3, mask_type="A")
    >>> conv(tf.zeros([1, 5, 5, 2])).shape
    TensorShape([1, 5, 5, 8])
    """

    def __init__(self, filters, kernel_size, mask_type: str = "B", **kwargs):
        if mask_type not in MASK_TYPES:
            raise ValueError(f"mask_type must be one of {MASK_TYPES}, got {mask_type!r}.")
        kwargs["padding"] = "same"
        super().__init__(filters, kernel_size, **kwargs)
        if any(k % 2 == 0 for k in self.kernel_size):
            raise ValueError(f"MaskedConv2D needs odd kernel sizes, got {self.kernel_size}.")
        if tuple(self.strides) != (1, 1) or tuple(self.dilation_rate) != (1, 1):
            raise ValueError("MaskedConv2D supports strides=1 and dilation_rate=1 only.")
        self.mask_type = mask_type
        self._mask = causal_mask(self.kernel_size, mask_type)[:, :, None, None]

    def convolution_op(self, inputs, kernel):
        return super().convolution_op(inputs, kernel * keras.ops.cast(self._mask, kernel.dtype))

    def get_config(self):
        config = super().get_config()
        config["mask_type"] = self.mask_type
        config.pop("padding", None)
        return config


def gate(x):
    a, b = tf.split(x, 2, axis=-1)
    return tf.tanh(a) * tf.sigmoid(b)


def shift_down(x):
    """Row i of the result is row i-1 of `x` (zeros in row 0): the vertical stack's output, which
    sees the current row, may only reach the horizontal stack of the next row."""
    return tf.pad(x, [[0, 0], [1, 0], [0, 0], [0, 0]])[:, :-1]


@keras.saving.register_keras_serializable(package=_PACKAGE)
class GatedBlock(keras.layers.Layer):
    """One gated PixelCNN layer (vertical + horizontal stack).

    Args:
      filters: channels F of both stacks.
      kernel_size: odd k; the vertical stack uses k x k, the horizontal 1 x k.
      first: the first block masks the centre of the horizontal stack ("A") and has no residual.
      last: the last block's vertical output is never used, so it has no output projection.
      num_classes: > 0 adds a learned class embedding to both stacks.
      dropout: dropout rate on the horizontal stack's gated output.
      condition_channels: > 0 adds spatial conditioning: features [B,h,w,condition_channels]
        through a 1x1 convolution to both stacks (e.g. VQ-VAE-2's top codes for its bottom prior).
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int = 5,
        first: bool = False,
        num_classes: int = 0,
        dropout: float = 0.0,
        last: bool = False,
        condition_channels: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.first = first
        self.last = last
        self.num_classes = num_classes
        self.dropout = dropout
        self.condition_channels = condition_channels
        self.v_conv = MaskedConv2D(2 * filters, (kernel_size, kernel_size), "V", name="v_conv")
        self.h_conv = MaskedConv2D(2 * filters, (1, kernel_size), "A" if first else "B", name="h_conv")
        self.v_to_h = keras.layers.Conv2D(2 * filters, 1, name="v_to_h")
        self.h_out = keras.layers.Conv2D(filters, 1, name="h_out")
        self.v_out = keras.layers.Conv2D(filters, 1, name="v_out") if not (first or last) else None
        self.class_embedding = (
            keras.layers.Embedding(num_classes, 4 * filters, name="class_embedding") if num_classes else None
        )
        # Spatial conditioning (gated PixelCNN, eq. 5: V * s): a 1x1 map of per-position features.
        self.condition_conv = keras.layers.Conv2D(4 * filters, 1, name="condition_conv") if condition_channels else None
        self.drop = keras.layers.Dropout(dropout) if dropout else None

    def build(self, input_shape):
        shape = tuple(input_shape)
        self.v_conv.build(shape)
        self.h_conv.build(shape)
        wide = shape[:-1] + (2 * self.filters,)
        self.v_to_h.build(wide)
        self.h_out.build(shape[:-1] + (self.filters,))
        if self.v_out is not None:
            self.v_out.build(shape[:-1] + (self.filters,))
        if self.class_embedding is not None:
            self.class_embedding.build((None,))
        if self.condition_conv is not None:
            self.condition_conv.build(shape[:-1] + (self.condition_channels,))

    def conditioning(self, labels=None, features=None):
        """What the block adds before its gates: (vertical, horizontal) halves, each 0.0 or
        ``[B, 1, 1, 2F]`` (class embedding) plus ``[B, h, w, 2F]`` (spatial `features` [B,h,w,C]
        through a 1x1 convolution)."""
        c = 0.0
        if self.class_embedding is not None:
            c = self.class_embedding(labels)[:, None, None, :]
        if self.condition_conv is not None:
            if features is None:
                raise ValueError("This block is spatially conditioned: pass the conditioning features.")
            c = c + self.condition_conv(features)
        if isinstance(c, float):
            return 0.0, 0.0
        return c[..., : 2 * self.filters], c[..., 2 * self.filters :]

    def vertical(self, v, cond_v=0.0):
        """v [B,h,w,F], `cond_v` (`conditioning`'s first half) -> (v_pre [B,h,w,2F] (pre-gate,
        sees rows <= i), v_next [B,h,w,F] or None for the last block)."""
        v_pre = self.v_conv(v) + cond_v
        if self.last:
            return v_pre, None
        gated = gate(v_pre)
        v_next = gated if self.v_out is None else v + self.v_out(gated)
        return v_pre, v_next

    def horizontal(self, h, v_link, cond_h=0.0, training=False):
        """h [B,r,w,F], v_link = shift_down(v_pre) rows matching h, `cond_h` -> h_next [B,r,w,F]."""
        gated = gate(self.h_conv(h) + self.v_to_h(v_link) + cond_h)
        if self.drop is not None:
            gated = self.drop(gated, training=training)
        out = self.h_out(gated)
        return out if self.first else h + out

    def call(self, inputs, labels=None, training=False, features=None):
        v, h = inputs
        cond_v, cond_h = self.conditioning(labels, features)
        v_pre, v_next = self.vertical(v, cond_v)
        return v_next, self.horizontal(h, shift_down(v_pre), cond_h, training)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            first=self.first,
            last=self.last,
            num_classes=self.num_classes,
            dropout=self.dropout,
            condition_channels=self.condition_channels,
        )
        return config
