"""What the binary quantizers (LFQ, BSQ) share: one code per sign pattern of the D channels
(index = sum_i [z_i > 0] 2^i, K = 2^D), the straight-through sign, a commitment loss and an
entropy penalty of soft code assignments that rewards confident codes and a diverse batch."""

from __future__ import annotations

import tensorflow as tf

from vqvae_tf.layers.quantizers import options
from vqvae_tf.layers.quantizers.base import Quantizer
from vqvae_tf.layers.quantizers.ops import bits_to_indices, indices_to_signs, perplexity_from_counts
from vqvae_tf.utils import checks
from vqvae_tf.utils.distribute import sync_across_replicas

# The options LFQ and BSQ declare.
BINARY_OPTIONS = (
    options.COMMITMENT_COST,
    options.ENTROPY_WEIGHT,
    options.DIVERSITY_WEIGHT,
    options.ENTROPY_TEMPERATURE,
)


class BinaryQuantizer(Quantizer):
    """Base of `LookupFreeQuantizer` and `BinarySphericalQuantizer` (not registered itself).

    A subclass sets `max_bits` and `default_temperature` and implements `project(z)` (the vector
    that is quantized), `scale` (the magnitude of a quantized channel) and
    `entropy_terms(projected, temperature)` -> (summed per-sample entropy, {statistics summed over
    the batch}, function of the global statistics -> batch entropy)."""

    max_bits = 16
    default_temperature = 1.0
    # The commitment loss's reduction: a mean over elements (LFQ, as lucidrains') or, with True, a
    # mean over vectors of their squared distance (BSQ, as bsq-vit's: D times the element mean).
    commitment_per_vector = False

    def __init__(
        self,
        embedding_dim: int,
        entropy_weight: float = 0.1,
        commitment_cost: float = 0.25,
        diversity_weight: float = 1.0,
        entropy_temperature: float | None = None,
        num_embeddings: int | None = None,
        **kwargs,
    ):
        k, d, _ = self.geometry(num_embeddings, embedding_dim, strict=True)
        super().__init__(k, d, **kwargs)
        for name, value in (
            ("entropy_weight", entropy_weight),
            ("commitment_cost", commitment_cost),
            ("diversity_weight", diversity_weight),
        ):
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value}.")
        temperature = self.default_temperature if entropy_temperature is None else entropy_temperature
        if not temperature > 0:
            raise ValueError(f"entropy_temperature must be > 0, got {temperature}.")
        self.entropy_weight = float(entropy_weight)
        self.commitment_cost = float(commitment_cost)
        self.diversity_weight = float(diversity_weight)
        self.entropy_temperature = float(temperature)

    @classmethod
    def geometry(cls, num_embeddings=None, embedding_dim=None, strict=False, **options):
        """(2^D, D, 1): D = embedding_dim bits fix K. With `strict`, another K is a ValueError."""
        checks.positive_int("embedding_dim", embedding_dim)
        if embedding_dim > cls.max_bits:
            raise ValueError(
                f"{cls.__name__} makes 2^embedding_dim codes: embedding_dim must be <= {cls.max_bits}, "
                f"got {embedding_dim} (set --embedding_dim)."
            )
        k = 2 ** int(embedding_dim)
        if strict and num_embeddings is not None and num_embeddings != k:
            raise ValueError(
                f"{cls.__name__} with embedding_dim={embedding_dim} has 2^{embedding_dim}={k} codes, "
                f"got num_embeddings={num_embeddings}."
            )
        return k, int(embedding_dim), 1

    # ---------------------------------------------------------------- subclass hooks

    def project(self, z):
        return z

    @property
    def scale(self) -> float:
        return 1.0

    def entropy_terms(self, projected, temperature):
        raise NotImplementedError

    # ---------------------------------------------------------------- the contract

    def call(self, z, training=False):
        dims = tf.shape(z)
        flat = self.project(tf.reshape(z, [-1, self.embedding_dim]))
        bits = flat > 0
        values = tf.where(bits, self.scale, -self.scale)
        indices = bits_to_indices(bits)
        counts = tf.math.unsorted_segment_sum(tf.ones_like(indices, tf.float32), indices, self.num_embeddings)
        sample_entropy, statistics, batch_entropy = self.entropy_terms(flat, self.entropy_temperature)
        summed = dict(
            statistics, counts=counts, sample_entropy=sample_entropy, count=tf.cast(tf.shape(flat)[0], tf.float32)
        )
        if training:  # the penalty and the perplexity of the global batch (one all-reduce)
            summed = sync_across_replicas(summed)[0]
        mean_sample_entropy = tf.math.divide_no_nan(summed["sample_entropy"], summed["count"])
        entropy_loss = self.entropy_weight * (mean_sample_entropy - self.diversity_weight * batch_entropy(summed))
        terms = tf.size(flat) if not self.commitment_per_vector else tf.shape(flat)[0]
        commitment = self.commitment_cost * tf.math.divide_no_nan(
            tf.reduce_sum(tf.square(flat - tf.stop_gradient(values))), tf.cast(terms, tf.float32)
        )
        return {
            "quantized": tf.reshape(flat + tf.stop_gradient(values - flat), dims),  # straight-through
            "indices": tf.reshape(indices, dims[:-1]),
            "codebook_loss": tf.zeros([], tf.float32),
            "commitment_loss": commitment,
            "perplexity": perplexity_from_counts(summed["counts"]),
            "entropy_loss": entropy_loss,
        }

    def indices_of(self, z, codebook=None):
        """Codes of float z ``[..., D]``: the bits of its signs (`codebook`: not needed)."""
        return bits_to_indices(tf.cast(z, tf.float32) > 0)

    def lookup(self, indices, codebook=None, check: bool = True):
        """Codes int ``[...]`` in ``[0, 2^D)`` -> float32 ``[..., D]`` of +-`scale` (`codebook`:
        a copy of `codebook` to gather from instead; `check`: range-check the codes)."""
        indices = self.checked_indices(indices, check)
        if codebook is not None:
            return tf.gather(codebook, indices)
        return indices_to_signs(indices, self.embedding_dim) * self.scale

    def get_config(self):
        config = super().get_config()
        config.update(
            embedding_dim=self.embedding_dim,
            entropy_weight=self.entropy_weight,
            commitment_cost=self.commitment_cost,
            diversity_weight=self.diversity_weight,
            entropy_temperature=self.entropy_temperature,
        )
        return config
