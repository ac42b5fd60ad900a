"""Binary spherical quantization (BSQ).

"Image and Video Tokenization with Binary Spherical Quantization", Zhao, Xiong, Krähenbühl (2024),
arXiv:2406.07548, section 3: z is projected to the unit sphere, u = z / ||z||, and quantized to
q = sign(u) / sqrt(D), a corner of the hypercube inscribed in the sphere, with a straight-through
gradient from u (eq. 2); the index is the binary number of the signs (K = 2^D). Its entropy
penalty (eq. 5-7) uses soft assignments p(q_i = +1/sqrt(D) | u) = sigmoid(4 u_i / (sqrt(D) tau))
that factorise over channels, for the per-sample entropy exactly and for the batch entropy as the
sum of the channels' entropies of their batch-mean probabilities (the paper's factorised
approximation, which needs no K-sized table).
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from vqvae_tf.layers import SERIALIZATION_PACKAGE
from vqvae_tf.layers.quantizers.binary import BINARY_OPTIONS, BinaryQuantizer
from vqvae_tf.layers.quantizers.ops import binary_entropy
from vqvae_tf.layers.quantizers.registry import register_quantizer


@register_quantizer(
    "bsq",
    *BINARY_OPTIONS,
    help="binary spherical quantization: signs on the unit sphere, K = 2^D, factorised entropy penalty",
)
@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class BinarySphericalQuantizer(BinaryQuantizer):
    """Binary spherical quantizer (BSQ) with the zoo's quantizer contract.

    Args:
      embedding_dim: D, the bits per code (<= 16); K = 2^D.
      entropy_weight, commitment_cost, diversity_weight: as `LookupFreeQuantizer`, but the
        commitment loss is the paper's (bsq-vit's): commitment_cost * mean over vectors of
        ||u - sg[q]||^2, a sum over the D channels, so a beta from the paper means the same here
        (LFQ's, a mean over channels, is D times weaker for the same beta).
      entropy_temperature: tau of the soft assignments (None: 1.0, the paper's).
      num_embeddings: must be 2^D when given.
      **kwargs: passed to `keras.layers.Layer`.

    Returns the contract's dict: ``quantized`` = sign(u) / sqrt(D) (forward; the gradient is the
    identity to u), ``indices`` = sum_i [z_i > 0] 2^i, ``commitment_loss``, ``entropy_loss``,
    ``perplexity``; ``codebook_loss`` is 0.

    Example:
    >>> bsq = BinarySphericalQuantizer(embedding_dim=4)
    >>> bsq.lookup(5).numpy()          # bits 0 and 2 set
    array([ 0.5, -0.5,  0.5, -0.5], dtype=float32)
    """

    max_bits = 16
    default_temperature = 1.0
    commitment_per_vector = True

    def project(self, z):
        return tf.math.l2_normalize(z, axis=-1, epsilon=1e-12)

    @property
    def scale(self) -> float:
        return 1.0 / math.sqrt(self.embedding_dim)

    def entropy_terms(self, projected, temperature):
        p = tf.sigmoid(4.0 * projected * self.scale / temperature)  # P(channel i = +1/sqrt(D))
        statistics = {"channel_probs": tf.reduce_sum(p, axis=0)}

        def batch_entropy(summed):
            return tf.reduce_sum(binary_entropy(tf.math.divide_no_nan(summed["channel_probs"], summed["count"])))

        return tf.reduce_sum(binary_entropy(p)), statistics, batch_entropy
