"""Gated PixelCNN prior over VQ-VAE codes (its layers: `vqvae_tf.layers.masked_conv`).

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

from vqvae_tf.layers import SERIALIZATION_PACKAGE
from vqvae_tf.layers.masked_conv import GatedBlock, shift_down
from vqvae_tf.utils import checks, distribute


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class PixelCNN(keras.Model):
    """Gated PixelCNN over code grids: codes int32 [B,h,w] (+ labels [B]) -> logits [B,h,w,K].

    Args:
      num_embeddings: K, the number of codes (the VQ-VAE's codebook size).
      latent_shape: (h, w) of the code grid.
      num_filters: channels of the stacks.
      num_layers: gated blocks. The stack must see every earlier position of the grid, which
        takes ``num_layers * (kernel_size // 2) >= max(h - 2, w - 1)`` (`layers_to_reach`); fewer
        raise ValueError. None: exactly `layers_to_reach(latent_shape, kernel_size)`.
      kernel_size: odd.
      num_classes: 0 for an unconditional prior, else the number of class labels.
      dropout: dropout rate inside the gated blocks.
      depth: codes per position of a residual quantizer, laid out side by side along the row
        (`VQVAE.prior_grid_shape`: column j holds depth j % depth), so that the raster order visits
        the depths of a position in order, as PixelCNN orders the colour channels of a pixel.
        Each depth has its own code embedding and output head (K codes each). 1: plain codes.

    The defaults are the prior the pipeline trains on Fashion-MNIST codes (`configs.PriorConfig`).

    Example:
    >>> prior = PixelCNN(num_embeddings=16, latent_shape=(7, 7), num_filters=8, num_layers=3, kernel_size=5)
    >>> prior(tf.zeros([2, 7, 7], tf.int32)).shape
    TensorShape([2, 7, 7, 16])
    """

    def __init__(
        self,
        num_embeddings: int,
        latent_shape=(7, 7),
        num_filters: int = 32,
        num_layers: int | None = 8,
        kernel_size: int = 3,
        num_classes: int = 0,
        dropout: float = 0.0,
        depth: int = 1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        checks.positive_int("num_embeddings", num_embeddings)
        checks.positive_int("depth", depth)
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}.")
        self.validate_stack(num_filters, num_layers, kernel_size, dropout)
        self.latent_shape = tuple(int(s) for s in latent_shape)
        if len(self.latent_shape) != 2 or min(self.latent_shape) < 1:
            raise ValueError(f"latent_shape must be (h, w) with positive sizes, got {latent_shape}.")
        if self.latent_shape[1] % depth:
            raise ValueError(
                f"latent_shape {self.latent_shape} must have a width that is a multiple of depth={depth} "
                "(each position's codes side by side)."
            )
        num_layers = self.resolve_layers(self.latent_shape, num_layers, kernel_size)
        self.depth = int(depth)
        self.num_embeddings = num_embeddings
        self.num_filters = num_filters
        self.num_layers = num_layers
        self.kernel_size = kernel_size
        self.num_classes = num_classes
        self.dropout = dropout
        self.embedding = keras.layers.Embedding(num_embeddings * depth, num_filters, name="code_embedding")
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
        self.head_logits = keras.layers.Conv2D(num_embeddings * depth, 1, name="head_logits")
        self._loss_tracker = keras.metrics.Mean(name="loss")
        self._bits_tracker = keras.metrics.Mean(name="bits_per_code")
        self._build_all()

    @staticmethod
    def layers_to_reach(latent_shape, kernel_size: int) -> int:
        """The fewest gated blocks whose prediction at every position depends on every earlier
        position (raster order) of an (h, w) grid. Each block widens the vertical stack's view by
        k // 2 rows up and columns either side, and the horizontal stack's by k // 2 columns left;
        the link from the vertical stack adds the row just above. So the row above's far end
        needs L (k // 2) >= w - 1 and the top row L (k // 2) >= h - 2 (tests/test_pixelcnn.py
        checks this bound and its tightness by gradients)."""
        h, w = latent_shape
        p = kernel_size // 2
        return max(1, -(-max(h - 2, w - 1) // p))

    @classmethod
    def resolve_layers(cls, latent_shape, num_layers: int | None, kernel_size: int) -> int:
        """`num_layers`, or the `layers_to_reach` for None; ValueError (naming the grid, the
        layers and the kernel) when the stack would not see every earlier position."""
        needed = cls.layers_to_reach(latent_shape, kernel_size)
        if num_layers is None:
            return needed
        if num_layers < needed:
            h, w = latent_shape
            raise ValueError(
                f"A PixelCNN of num_layers={num_layers} with kernel_size={kernel_size} cannot see every "
                f"earlier position of a {h}x{w} code grid: it needs num_layers >= {needed} for that kernel "
                f"(num_layers * (kernel_size // 2) >= max(h - 2, w - 1)). Use more layers, a larger "
                "kernel_size, or num_layers=None to size the stack from the grid."
            )
        return num_layers

    @staticmethod
    def validate_stack(num_filters, num_layers, kernel_size, dropout) -> None:
        """Raises ValueError naming the first bad argument of the gated stack (num_layers may
        be None: sized from the grid)."""
        checks.positive_int("num_filters", num_filters)
        if num_layers is not None:
            checks.positive_int("num_layers", num_layers)
        if kernel_size % 2 == 0 or kernel_size < 3:
            raise ValueError(f"kernel_size must be odd and >= 3, got {kernel_size}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")

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
        codes = checks.batch_of(codes, "codes", self.latent_shape, integer=True, kind="integers")
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

    def embed(self, codes, column=None):
        """Codes int32 ``[..., w]`` of whole rows -> embeddings ``[..., w, F]`` (each depth its own
        table); with `column`, ``[..., 1]`` codes of that one grid column."""
        if self.depth > 1:
            columns = tf.range(tf.shape(codes)[-1]) if column is None else column
            codes = codes + (columns % self.depth) * self.num_embeddings
        return self.embedding(codes)

    def head(self, h, column=None):
        """Output of the last horizontal stack -> logits float32 [..., K]: `h` [B, r, w, F] of whole
        rows, or, with `column` (the grid column of a single position), [B, 1, 1, F]."""
        logits = tf.cast(self.head_logits(self.head_hidden(tf.nn.relu(h))), tf.float32)
        if self.depth == 1:
            return logits
        # Each column's depth selects its own K logits out of depth * K.
        logits = tf.reshape(logits, tf.concat([tf.shape(logits)[:-1], [self.depth, self.num_embeddings]], 0))
        if column is None:
            select = tf.one_hot(tf.range(tf.shape(logits)[-3]) % self.depth, self.depth)[:, :, None]
        else:
            select = tf.one_hot(column % self.depth, self.depth)[:, None]
        return tf.reduce_sum(logits * select, axis=-2)

    def logits_from_embeddings(self, x, labels=None, training=False):
        return self.horizontal_logits(x, self.vertical_links(x, labels), labels, training)

    def call(self, codes, labels=None, training=False):
        if isinstance(codes, (tuple, list)):  # Keras' multi-input form, e.g. predict((codes, labels))
            codes, labels = codes
        codes = self.check_codes(codes)
        labels = self.check_labels(labels, tf.shape(codes)[0])
        return self.logits_from_embeddings(self.embed(codes), labels, training)

    def distribution(self, codes, labels=None):
        """p(z): a `tfp.distributions.Independent(Categorical)` over the whole code grid."""
        logits = self(codes, labels)
        return tfp.distributions.Independent(tfp.distributions.Categorical(logits=logits), reinterpreted_batch_ndims=2)

    def log_prob(self, codes, labels=None):
        """log p(codes) in nats, float32 [B]."""
        return self.distribution(codes, labels).log_prob(self.check_codes(codes))

    def bits_per_code(self, log_prob):
        """`log_prob` of whole code grids (nats, as `log_prob` gives) as bits per code."""
        h, w = self.latent_shape
        return -log_prob / float(h * w * np.log(2.0))

    # ---------------------------------------------------------------- training

    @property
    def metrics(self):
        return [self._loss_tracker, self._bits_tracker]

    def _nll(self, data, training):
        """Negative log-likelihood of each code grid, nats per code: float32 [B]."""
        # (codes, labels) from a dataset, or Keras' packing ((codes, labels),) / (codes,) from fit(x).
        while isinstance(data, (tuple, list)) and len(data) == 1:
            data = data[0]
        codes, labels = (data[0], data[1]) if isinstance(data, (tuple, list)) else (data, None)
        if self.num_classes == 0:
            labels = None
        logits = self(codes, labels, training=training)
        nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(codes, tf.int32), logits=logits)
        return tf.reduce_mean(nll, axis=[1, 2])

    def _track(self, nll):
        # Per-example values, so `evaluate` gives the exact mean over a dataset whatever its last batch.
        self._loss_tracker.update_state(nll)
        self._bits_tracker.update_state(nll / np.log(2.0))
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        with tf.GradientTape() as tape:
            nll = self._nll(data, training=True)
            scaled = self.optimizer.scale_loss(distribute.replica_scaled(tf.reduce_mean(nll)))
        variables = self.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(scaled, variables), variables))
        return self._track(nll)

    def test_step(self, data):
        return self._track(self._nll(data, training=False))

    @classmethod
    def from_preset(cls, preset: str, load_weights: bool = True) -> "PixelCNN":
        """The prior of a pretrained preset: a shipped name (`vqvae_tf.list_presets()`) or a
        preset directory, with its weights unless `load_weights` is False."""
        from vqvae_tf.models import presets

        return presets.load(cls, preset, load_weights)

    def save_to_preset(self, directory: str, metadata: dict | None = None) -> str:
        """Writes this prior as a preset directory (config.json, model.weights.h5, metadata.json)."""
        from vqvae_tf.models import presets

        return presets.save(self, directory, metadata)

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
            depth=self.depth,
        )
        return config
