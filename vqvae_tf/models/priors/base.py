"""What the priors over one code grid share. `GridPrior`: the prior API of the stages, the loss and
bits-per-code metrics, and residual VQ's depths laid side by side along a row (PixelCNN, the
transformer, MaskGIT). `AutoregressivePrior`: an exact likelihood and its cross-entropy training
(PixelCNN, the transformer).

A model using them has ``latent_shape`` (h, w), ``num_embeddings`` K, ``num_classes``, ``depth``
and calls `_make_trackers()` in its constructor; an autoregressive one has ``call(codes,
labels=None, training=False, condition=None)`` -> logits float32 [B, h, w, K] where the logits at
a position depend only on the codes before it in raster order.
"""

from __future__ import annotations

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from vqvae_tf.layers.likelihoods import LOG2
from vqvae_tf.utils import distribute


def codes_and_labels(data, num_classes: int):
    """A prior's training batch -> (codes, labels or None for an unconditional prior): (codes,
    labels) from a dataset, or Keras' packing ((codes, labels),) / (codes,) from fit(x)."""
    while isinstance(data, (tuple, list)) and len(data) == 1:
        data = data[0]
    codes, labels = (data[0], data[1]) if isinstance(data, (tuple, list)) else (data, None)
    return codes, (labels if num_classes else None)


class GridPrior:
    """Mixin for a Keras prior over one code grid (see the module); a subclass defines `_nll`,
    `prior_network` (its `PriorConfig.prior` name) and `exact_likelihood` (whether its metric is
    -log p of the codes, or, MaskGIT's, a masked-token NLL)."""

    prior_network = ""
    exact_likelihood = False

    @staticmethod
    def checked_grid(latent_shape, depth: int) -> tuple:
        """(h, w) as ints; ValueError unless both are positive and w is a multiple of `depth`."""
        shape = tuple(int(s) for s in latent_shape)
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(f"latent_shape must be (h, w) with positive sizes, got {latent_shape}.")
        if shape[1] % depth:
            raise ValueError(
                f"latent_shape {shape} must have a width that is a multiple of depth={depth} "
                "(each position's codes side by side)."
            )
        return shape

    def _make_trackers(self):
        self._loss_tracker = keras.metrics.Mean(name="loss")
        self._bits_tracker = keras.metrics.Mean(name="bits_per_code")

    def select_depth(self, logits, column=None):
        """A head's depth * K outputs -> K logits: each grid column's depth selects its own K.
        `logits` [..., w, depth * K] of whole rows, or [N, depth * K] of one position in grid
        column `column`. The identity for depth 1."""
        if self.depth == 1:
            return logits
        logits = tf.reshape(logits, tf.concat([tf.shape(logits)[:-1], [self.depth, self.num_embeddings]], 0))
        if column is None:
            select = tf.one_hot(tf.range(tf.shape(logits)[-3]) % self.depth, self.depth)[:, :, None]
        else:
            select = tf.one_hot(column % self.depth, self.depth)[:, None]
        return tf.reduce_sum(logits * select, axis=-2)

    # The prior API that every stage and export uses (shared with `hierarchical.HierarchicalPrior`):
    # code grids by name, as the autoencoder's `prior_grids` names them.

    @property
    def grid_shapes(self) -> dict:
        return {"codes": self.latent_shape}

    @property
    def num_codes(self) -> int:
        return self.latent_shape[0] * self.latent_shape[1]

    def bits_per_code(self, log_prob):
        """`log_prob` of whole code grids (nats, as `log_prob` gives) as bits per code."""
        h, w = self.latent_shape
        return -log_prob / (h * w * LOG2)

    # ---------------------------------------------------------------- training

    @property
    def metrics(self):
        return [self._loss_tracker, self._bits_tracker]

    def _track(self, nll):
        # Per-example values, so `evaluate` gives the exact mean over a dataset whatever its last batch.
        self._loss_tracker.update_state(nll)
        self._bits_tracker.update_state(nll / LOG2)
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


class AutoregressivePrior(GridPrior):
    """A `GridPrior` with an exact likelihood: log p(codes) by the chain rule over raster order,
    sampled by the subclass's `codes_sampler(prior, num_samples, temperature, seed, labels, top_k,
    fast)` and, on device, `uniforms_sampler(prior, uniforms, temperature, labels)` (functions)."""

    exact_likelihood = True
    codes_sampler = None
    uniforms_sampler = None

    def sample_grids_graph(self, num_samples, temperature, seed, labels=None, top_k=None, fast=True) -> dict:
        """`codes_sampler` as {"codes": codes}: seeded ancestral sampling (`fast`: with the sampler's cache)."""
        return {"codes": self.codes_sampler(self, num_samples, temperature, seed, labels, top_k, fast)}

    def generator_uniforms_shape(self, steps=None) -> list:
        """The per-sample shape of the TFLite generator's ``uniforms`` input: one per position."""
        return [self.latent_shape[0] * self.latent_shape[1]]

    def sample_from_uniforms_graph(self, uniforms, temperature, labels=None):
        """`uniforms_sampler` (the TFLite generator's sampler: one uniform per position)."""
        return self.uniforms_sampler(self, uniforms, temperature, labels)

    def distribution(self, codes, labels=None, condition=None):
        """p(z): a `tfp.distributions.Independent(Categorical)` over the whole code grid."""
        logits = self(codes, labels, condition=condition)
        return tfp.distributions.Independent(tfp.distributions.Categorical(logits=logits), reinterpreted_batch_ndims=2)

    def log_prob(self, codes, labels=None, condition=None):
        """log p(codes) in nats, float32 [B]."""
        return self.distribution(codes, labels, condition).log_prob(self.check_codes(codes))

    def log_prob_grids(self, grids: dict, labels=None):
        return self.log_prob(grids["codes"], labels)

    def _nll(self, data, training):
        """Negative log-likelihood of each code grid, nats per code: float32 [B]."""
        codes, labels = codes_and_labels(data, self.num_classes)
        logits = self(codes, labels, training=training)
        nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(codes, tf.int32), logits=logits)
        return tf.reduce_mean(nll, axis=[1, 2])
