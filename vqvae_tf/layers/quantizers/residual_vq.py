"""Residual vector quantization (RVQ): stages of VQ, each on what the earlier ones left.

"SoundStream: An End-to-End Neural Audio Codec", Zeghidour et al. (2021), arXiv:2107.03312,
section 3.3, algorithm 1: stage i quantizes the residual r_i = r_{i-1} - e_{i-1} (r_1 = z_e) and
the output is the sum of the stages' vectors; quantizer dropout trains the first n_q stages only,
with n_q drawn per step, so that fewer stages still decode (section 3.3, "bitrate scalability").
"""

from __future__ import annotations

import keras
import tensorflow as tf

from vqvae_tf.layers import SERIALIZATION_PACKAGE
from vqvae_tf.layers.quantizers import options
from vqvae_tf.layers.quantizers.base import Quantizer
from vqvae_tf.layers.quantizers.ema import VectorQuantizerEMA
from vqvae_tf.layers.quantizers.ops import GRADIENTS, gradient_estimator, nearest_codes
from vqvae_tf.layers.quantizers.registry import Option, register_quantizer
from vqvae_tf.utils import checks

NUM_QUANTIZERS = Option("num_quantizers", 2, "Residual VQ: stages (codes per position).", type="int", architecture=True)
QUANTIZER_DROPOUT = Option(
    "quantizer_dropout", 0.0, "Residual VQ: probability of training a step on the first n stages only."
)


@register_quantizer(
    "rvq",
    options.COMMITMENT_COST,
    options.DECAY,
    options.DEAD_CODE_THRESHOLD,
    options.KMEANS_INIT,
    options.GRADIENT,
    NUM_QUANTIZERS,
    QUANTIZER_DROPOUT,
    help="residual VQ (--num_quantizers): EMA stages on successive residuals",
)
@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class ResidualVectorQuantizer(Quantizer):
    """Residual VQ with `VectorQuantizer`'s contract; its stages are `VectorQuantizerEMA` layers.

    Args:
      num_quantizers: Q, the stages (the depth); each position gets Q codes.
      num_embeddings: K, codes per stage.
      embedding_dim: D, the size of the input's last axis (and of every stage's vectors).
      commitment_cost: beta of every stage's commitment loss (on its own residual).
      decay, epsilon: the stages' EMA codebook.
      dead_code_threshold, usage_decay, kmeans_init, kmeans_iterations, restart_grace_steps: each
        stage's dead-code restart and k-means init (on its residuals), see `VectorQuantizer`.
      quantizer_dropout: probability that a training step uses only the first n stages, n drawn
        uniformly from 1..Q (the same draw on every replica). Dropped stages still see their
        residuals (their codebooks keep learning) but add nothing to ``quantized`` or the losses.
      gradient: "straight_through" or "rotation", applied once, from z_e to the sum of the
        stages' vectors.
      seed: stage i uses seed + i.
      **kwargs: passed to `keras.layers.Layer`.

    Returns `VectorQuantizer`'s dict, with ``indices`` int32 ``inputs.shape[:-1] + [Q]``,
    ``commitment_loss`` the sum of the stages' and ``perplexity`` their mean.

    Example:
    >>> rvq = ResidualVectorQuantizer(num_quantizers=2, num_embeddings=16, embedding_dim=4)
    >>> rvq(tf.random.normal([2, 3, 3, 4]))["indices"].shape
    TensorShape([2, 3, 3, 2])
    """

    def __init__(
        self,
        num_quantizers: int,
        num_embeddings: int,
        embedding_dim: int,
        commitment_cost: float = 0.25,
        decay: float = 0.99,
        epsilon: float = 1e-5,
        dead_code_threshold: float = 0.0,
        usage_decay: float | None = None,
        kmeans_init: bool = False,
        kmeans_iterations: int = 10,
        restart_grace_steps: int | None = None,
        quantizer_dropout: float = 0.0,
        gradient: str = "straight_through",
        seed: int = 0,
        distance: str = "euclidean",
        **kwargs,
    ):
        super().__init__(num_embeddings, embedding_dim, **kwargs)
        checks.positive_int("num_quantizers", num_quantizers)
        if distance != "euclidean":
            raise ValueError(
                f"ResidualVectorQuantizer supports distance='euclidean' only, got {distance!r}: the cosine "
                "distance normalises each stage's input, so the stages would no longer add up to z_e."
            )
        checks.one_of("gradient", gradient, GRADIENTS)
        if not 0.0 <= quantizer_dropout <= 1.0:
            raise ValueError(f"quantizer_dropout must be in [0, 1], got {quantizer_dropout}.")
        self.num_quantizers = int(num_quantizers)
        self.quantizer_dropout = float(quantizer_dropout)
        self.gradient = gradient
        self.seed = int(seed)
        self.distance = distance
        self._stage_args = dict(
            num_embeddings=num_embeddings,
            embedding_dim=embedding_dim,
            commitment_cost=commitment_cost,
            decay=decay,
            epsilon=epsilon,
            dead_code_threshold=dead_code_threshold,
            kmeans_init=kmeans_init,
            kmeans_iterations=kmeans_iterations,
            restart_grace_steps=restart_grace_steps,
        )
        if usage_decay is not None:
            self._stage_args["usage_decay"] = usage_decay
        # The stages compute in float32 whatever the policy: residuals of rounded vectors would drift.
        self.stages = [
            VectorQuantizerEMA(**self._stage_args, seed=self.seed + i, name=f"stage_{i}", dtype="float32")
            for i in range(self.num_quantizers)
        ]
        self.codes_per_position = self.num_quantizers

    @classmethod
    def geometry(cls, num_embeddings, embedding_dim, num_quantizers=NUM_QUANTIZERS.default, **options):
        checks.positive_int("num_quantizers", num_quantizers)
        return int(num_embeddings), int(embedding_dim), int(num_quantizers)

    def build_state(self):
        for stage in self.stages:
            stage.build((None, self.embedding_dim))

    # ---------------------------------------------------------------- forward

    def _active_stages(self, training):
        """float32 [Q]: 1 for the stages that count in this call (quantizer dropout in training)."""
        q = self.num_quantizers
        if not (training and self.quantizer_dropout > 0 and q > 1):
            return tf.ones([q], tf.float32)
        # A stateless draw keyed by the step: every replica drops the same stages.
        step = tf.cast(self.stages[0].num_updates, tf.int32)
        u = tf.random.stateless_uniform([2], seed=tf.stack([tf.constant(self.seed, tf.int32), step]))
        n = tf.where(u[0] < self.quantizer_dropout, 1 + tf.cast(u[1] * q, tf.int32), q)
        return tf.cast(tf.range(q) < tf.minimum(n, q), tf.float32)

    def call(self, z, training=False):
        active = self._active_stages(training)
        residual, total = z, tf.zeros_like(z)
        indices, commitment, perplexities = [], tf.zeros([], tf.float32), []
        for i, stage in enumerate(self.stages):
            out = stage(residual, training=training)
            vectors = tf.stop_gradient(tf.cast(out["quantized"], tf.float32))  # e_i (forward value)
            total += active[i] * vectors
            commitment += active[i] * out["commitment_loss"]
            indices.append(out["indices"])
            perplexities.append(out["perplexity"])
            residual = residual - vectors  # r_{i+1}: the gradient reaches z_e as the identity
        return {
            "quantized": gradient_estimator(self.gradient)(z, total),
            "indices": tf.stack(indices, axis=-1),
            "codebook_loss": tf.zeros([], tf.float32),
            "commitment_loss": commitment,
            "perplexity": tf.reduce_mean(tf.stack(perplexities)),
        }

    # ---------------------------------------------------------------- indices <-> vectors

    @property
    def codebook(self):
        """The stages' codebooks, float32 ``[Q, K, D]``."""
        return tf.stack([stage.codebook for stage in self.stages])

    def indices_of(self, z, codebook=None):
        """Codes of float z ``[..., D]`` -> int32 ``[..., Q]`` without touching state (`codebook`:
        a constant copy of `self.codebook` to use instead of the variables)."""
        codebook = self.codebook if codebook is None else codebook
        residual, indices = tf.cast(z, tf.float32), []
        for i in range(self.num_quantizers):
            idx = nearest_codes(residual, codebook[i])
            residual -= tf.gather(codebook[i], idx)
            indices.append(idx)
        return tf.stack(indices, axis=-1)

    def lookup(self, indices, codebook=None, check: bool = True):
        """Codes int ``[..., Q]`` in ``[0, K)`` -> the sum of the stages' vectors, float32
        ``[..., D]`` (`codebook`: a constant copy of `self.codebook`; `check`: range-check)."""
        indices = self.checked_indices(indices, check)
        if indices.shape.rank is not None and indices.shape[-1] not in (None, self.num_quantizers):
            raise ValueError(
                f"{self.name}.lookup: codes need a last axis of num_quantizers={self.num_quantizers}, "
                f"got shape {indices.shape}."
            )
        if codebook is None:
            self._ensure_built()
            codebook = self.codebook
        return tf.add_n([tf.gather(codebook[i], indices[..., i]) for i in range(self.num_quantizers)])

    # ---------------------------------------------------------------- training-time state

    @property
    def num_restarts(self):
        return tf.add_n([tf.convert_to_tensor(stage.num_restarts) for stage in self.stages])

    @property
    def code_usage(self):
        """The stages' usage EMAs, float32 ``[Q * K]``."""
        return tf.concat([tf.convert_to_tensor(stage.code_usage) for stage in self.stages], 0)

    def reinitialize(self) -> None:
        for stage in self.stages:
            stage.reinitialize()

    def reseedable_codebooks(self) -> list:
        return [pair for stage in self.stages for pair in stage.reseedable_codebooks()]

    def get_config(self):
        config = super().get_config()
        config.update(
            num_quantizers=self.num_quantizers,
            quantizer_dropout=self.quantizer_dropout,
            gradient=self.gradient,
            seed=self.seed,
            distance=self.distance,
            **self._stage_args,
        )
        if "usage_decay" not in self._stage_args:
            config["usage_decay"] = None
        return config
