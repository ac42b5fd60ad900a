"""Gated PixelCNN prior over VQ-VAE codes.

"Conditional Image Generation with PixelCNN Decoders", van den Oord et al. 2016
(arXiv:1606.05328): a vertical stack (the rows above) and a horizontal stack (the current row, to
the left) remove the blind spot of plain masked stacks; gated activations tanh(a) * sigmoid(b)
(eq. 2); residual connections in the horizontal stack; an optional class embedding added in every
gated block (conditional PixelCNN, eq. 4). The VQ-VAE paper (arXiv:1711.00937, section 3.3)
fits this prior to the codes of a trained VQ-VAE.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from vqvae_tf import checks

_PACKAGE = "vqvae_tf"
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

    def valid(self, windows):
        """The layer's output at the centre of each kernel-sized window (VALID padding): what an
        incremental sampler needs, without computing the rest of the window."""
        kernel = self.kernel * keras.ops.cast(self._mask, self.kernel.dtype)
        y = keras.ops.conv(windows, kernel, strides=1, padding="valid", data_format=self.data_format)
        if self.use_bias:
            y = y + self.bias
        return self.activation(y) if self.activation is not None else y

    def get_config(self):
        config = super().get_config()
        config["mask_type"] = self.mask_type
        config.pop("padding", None)
        return config


def _gate(x):
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
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int = 5,
        first: bool = False,
        num_classes: int = 0,
        dropout: float = 0.0,
        last: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.first = first
        self.last = last
        self.num_classes = num_classes
        self.dropout = dropout
        self.v_conv = MaskedConv2D(2 * filters, (kernel_size, kernel_size), "V", name="v_conv")
        self.h_conv = MaskedConv2D(2 * filters, (1, kernel_size), "A" if first else "B", name="h_conv")
        self.v_to_h = keras.layers.Conv2D(2 * filters, 1, name="v_to_h")
        self.h_out = keras.layers.Conv2D(filters, 1, name="h_out")
        self.v_out = keras.layers.Conv2D(filters, 1, name="v_out") if not (first or last) else None
        self.class_embedding = (
            keras.layers.Embedding(num_classes, 4 * filters, name="class_embedding") if num_classes else None
        )
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

    def _conditioning(self, labels):
        if self.class_embedding is None:
            return 0.0, 0.0
        c = self.class_embedding(labels)[:, None, None, :]
        return c[..., : 2 * self.filters], c[..., 2 * self.filters :]

    def vertical(self, v, labels=None, window=False):
        """v [B,h,w,F] -> (v_pre [B,h,w,2F] (pre-gate, sees rows <= i), v_next [B,h,w,F]).

        window=True: v is [B, k, w + 2p, F] (rows r-p..r+p, width zero-padded by p = k // 2) and
        only row r is computed: ([B,1,w,2F], [B,1,w,F]).
        """
        cond_v, _ = self._conditioning(labels)
        if window:
            p = self.kernel_size // 2
            v_pre = self.v_conv.valid(v) + cond_v
            v = v[:, p : p + 1, p:-p]
        else:
            v_pre = self.v_conv(v) + cond_v
        gated = _gate(v_pre)
        if self.last:
            return v_pre, None
        v_next = gated if self.v_out is None else v + self.v_out(gated)
        return v_pre, v_next

    def horizontal(self, h, v_link, labels=None, training=False, window=False):
        """h [B,r,w,F], v_link = shift_down(v_pre) rows matching h -> h_next [B,r,w,F].

        window=True: h is [B, 1, k, F] (columns c-p..c+p of one row), v_link [B,1,1,2F] is the
        link at column c, and only column c is computed: [B,1,1,F].
        """
        _, cond_h = self._conditioning(labels)
        if window:
            p = self.kernel_size // 2
            conv, h = self.h_conv.valid(h), h[:, :, p : p + 1]
        else:
            conv = self.h_conv(h)
        gated = _gate(conv + self.v_to_h(v_link) + cond_h)
        if self.drop is not None:
            gated = self.drop(gated, training=training)
        out = self.h_out(gated)
        return out if self.first else h + out

    def call(self, inputs, labels=None, training=False):
        v, h = inputs
        v_pre, v_next = self.vertical(v, labels)
        return v_next, self.horizontal(h, shift_down(v_pre), labels, training)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            first=self.first,
            last=self.last,
            num_classes=self.num_classes,
            dropout=self.dropout,
        )
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PixelCNN(keras.Model):
    """Gated PixelCNN over code grids: codes int32 [B,h,w] (+ labels [B]) -> logits [B,h,w,K].

    Args:
      num_embeddings: K, the number of codes (the VQ-VAE's codebook size).
      latent_shape: (h, w) of the code grid.
      num_filters: channels of the stacks.
      num_layers: gated blocks. Without a blind spot, every earlier position is seen once
        num_layers * (kernel_size // 2) >= max(h, w) - 1.
      kernel_size: odd.
      num_classes: 0 for an unconditional prior, else the number of class labels.
      dropout: dropout rate inside the gated blocks.

    Example:
    >>> prior = PixelCNN(num_embeddings=16, latent_shape=(7, 7), num_filters=8, num_layers=2)
    >>> prior(tf.zeros([2, 7, 7], tf.int32)).shape
    TensorShape([2, 7, 7, 16])
    """

    def __init__(
        self,
        num_embeddings: int,
        latent_shape=(7, 7),
        num_filters: int = 64,
        num_layers: int = 6,
        kernel_size: int = 5,
        num_classes: int = 0,
        dropout: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for name, value in (
            ("num_embeddings", num_embeddings),
            ("num_filters", num_filters),
            ("num_layers", num_layers),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if kernel_size % 2 == 0 or kernel_size < 3:
            raise ValueError(f"kernel_size must be odd and >= 3, got {kernel_size}.")
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        self.num_embeddings = num_embeddings
        self.latent_shape = tuple(int(s) for s in latent_shape)
        self.num_filters = num_filters
        self.num_layers = num_layers
        self.kernel_size = kernel_size
        self.num_classes = num_classes
        self.dropout = dropout
        self.embedding = keras.layers.Embedding(num_embeddings, num_filters, name="code_embedding")
        self.blocks = [
            GatedBlock(
                num_filters,
                kernel_size,
                first=(i == 0),
                num_classes=num_classes,
                dropout=dropout,
                last=(i == num_layers - 1),
                name=f"gated_{i}",
            )
            for i in range(num_layers)
        ]
        self.head_hidden = keras.layers.Conv2D(2 * num_filters, 1, activation="relu", name="head_hidden")
        self.head_logits = keras.layers.Conv2D(num_embeddings, 1, name="head_logits")
        self._loss_tracker = keras.metrics.Mean(name="loss")
        self._bits_tracker = keras.metrics.Mean(name="bits_per_code")
        self._build_all()

    def _build_all(self):
        h, w = self.latent_shape
        shape = (None, h, w, self.num_filters)
        self.embedding.build((None, h, w))
        for block in self.blocks:
            block.build(shape)
        self.head_hidden.build(shape)
        self.head_logits.build(shape[:-1] + (2 * self.num_filters,))
        self.built = True

    # ---------------------------------------------------------------- validation

    def check_codes(self, codes):
        codes = tf.convert_to_tensor(codes)
        if not codes.dtype.is_integer:
            raise TypeError(f"codes must be integers, got dtype {codes.dtype.name}.")
        if codes.shape.rank is not None and (
            codes.shape.rank != 3 or not codes.shape[1:].is_compatible_with(self.latent_shape)
        ):
            raise ValueError(
                f"codes must have shape [B, {self.latent_shape[0]}, {self.latent_shape[1]}], got {codes.shape}."
            )
        return checks.in_range(tf.cast(codes, tf.int32), 0, self.num_embeddings, "codes")

    def check_labels(self, labels, batch_size=None):
        if self.num_classes == 0:
            if labels is not None:
                raise ValueError("This prior is unconditional (num_classes=0) but labels were given.")
            return None
        if labels is None:
            raise ValueError(f"This prior is class-conditional (num_classes={self.num_classes}): pass labels.")
        labels = tf.convert_to_tensor(labels)
        if not labels.dtype.is_integer:
            raise TypeError(f"labels must be integers, got dtype {labels.dtype.name}.")
        labels = checks.in_range(tf.reshape(tf.cast(labels, tf.int32), [-1]), 0, self.num_classes, "labels")
        if batch_size is not None:
            labels = checks.require(
                labels,
                tf.equal(tf.size(labels), batch_size),
                "labels must be one per sample: got",
                tf.size(labels),
                "labels for",
                batch_size,
                "samples",
            )
        return labels

    # ---------------------------------------------------------------- forward

    def vertical_links(self, x, labels=None):
        """Embedded codes [B,h,w,F] -> per block, shift_down(v_pre) [B,h,w,2F]: everything the
        horizontal stack of row i needs from the rows above."""
        links, v = [], x
        for block in self.blocks:
            v_pre, v = block.vertical(v, labels)
            links.append(shift_down(v_pre))
        return links

    def horizontal_logits(self, h, links, labels=None, training=False):
        """Embedded rows [B,r,w,F] and matching rows of `links` -> logits [B,r,w,K] (float32)."""
        for block, link in zip(self.blocks, links):
            h = block.horizontal(h, link, labels, training)
        return self.head(h)

    def head(self, h):
        """Output of the last horizontal stack [..., F] -> logits [..., K] (float32)."""
        return tf.cast(self.head_logits(self.head_hidden(tf.nn.relu(h))), tf.float32)

    def logits_from_embeddings(self, x, labels=None, training=False):
        return self.horizontal_logits(x, self.vertical_links(x, labels), labels, training)

    def call(self, codes, labels=None, training=False):
        if isinstance(codes, (tuple, list)):  # Keras' multi-input form, e.g. predict((codes, labels))
            codes, labels = codes
        codes = self.check_codes(codes)
        labels = self.check_labels(labels, tf.shape(codes)[0])
        return self.logits_from_embeddings(self.embedding(codes), labels, training)

    def distribution(self, codes, labels=None):
        """p(z): a `tfp.distributions.Independent(Categorical)` over the whole code grid."""
        logits = self(codes, labels)
        return tfp.distributions.Independent(tfp.distributions.Categorical(logits=logits), reinterpreted_batch_ndims=2)

    def log_prob(self, codes, labels=None):
        """log p(codes) in nats, float32 [B]."""
        return self.distribution(codes, labels).log_prob(self.check_codes(codes))

    # ---------------------------------------------------------------- training

    @property
    def metrics(self):
        return [self._loss_tracker, self._bits_tracker]

    def _nll(self, data, training):
        # (codes, labels) from a dataset, or Keras' packing ((codes, labels),) / (codes,) from fit(x).
        while isinstance(data, (tuple, list)) and len(data) == 1:
            data = data[0]
        codes, labels = (data[0], data[1]) if isinstance(data, (tuple, list)) else (data, None)
        if self.num_classes == 0:
            labels = None
        logits = self(codes, labels, training=training)
        nll = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(codes, tf.int32), logits=logits)
        )
        return nll

    def _track(self, nll):
        self._loss_tracker.update_state(nll)
        self._bits_tracker.update_state(nll / np.log(2.0))
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        with tf.GradientTape() as tape:
            nll = self._nll(data, training=True)
            ctx = tf.distribute.get_replica_context()
            replicas = ctx.num_replicas_in_sync if ctx is not None else 1
            scaled = self.optimizer.scale_loss(nll / replicas)
        variables = self.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(scaled, variables), variables))
        return self._track(nll)

    def test_step(self, data):
        return self._track(self._nll(data, training=False))

    def get_config(self):
        config = super().get_config()
        config.update(
            num_embeddings=self.num_embeddings,
            latent_shape=list(self.latent_shape),
            num_filters=self.num_filters,
            num_layers=self.num_layers,
            kernel_size=self.kernel_size,
            num_classes=self.num_classes,
            dropout=self.dropout,
        )
        return config
