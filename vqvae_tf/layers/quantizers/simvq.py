"""SimVQ: a frozen random codebook times one learned linear map.

"Addressing Representation Collapse in Vector Quantized Models with One Linear Layer", Zhu, Li,
Liu, Zhang, Yang (2024), arXiv:2411.02038; reference code: github.com/youngsheen/SimVQ
(taming/modules/vqvae/quantize.py). The codebook is ``C W`` with ``C [K, D]`` drawn once from
N(0, 1/D) and frozen, and ``W`` a learned ``D x D`` linear map (with a bias, as the reference's
``nn.Linear``, and its initialisation): the nearest code of z_e is searched among the rows of
``C W``, and since every row depends on W, every code moves at each step, whether the batch chose
it or not (the paper's remedy for collapse).

Losses as the reference's non-legacy form: ``beta ||z_e - sg[e]||^2`` (commitment) plus
``||sg[z_e] - e||^2`` (codebook: it trains W; C gets no gradient). Its ``legacy=True`` default
weights them the other way round (taming-transformers' old order); we keep the VQ-VAE paper's, as
every quantizer of the zoo. The decoder's gradient reaches z_e by the straight-through estimator
and never W. No restarts and no k-means: not needed, and not in the paper.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from vqvae_tf.layers import SERIALIZATION_PACKAGE
from vqvae_tf.layers.quantizers import options
from vqvae_tf.layers.quantizers.base import GatheredCodebookQuantizer
from vqvae_tf.layers.quantizers.ops import batch_perplexity, nearest_codes, nearest_rows, straight_through
from vqvae_tf.layers.quantizers.registry import register_quantizer


@register_quantizer("simvq", options.COMMITMENT_COST, help="SimVQ: a frozen random codebook times a learned linear map")
@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class SimVQQuantizer(GatheredCodebookQuantizer):
    """SimVQ (Zhu et al. 2024): nearest code among the rows of ``C W + b``, C frozen.

    Args:
      num_embeddings, embedding_dim: K and D.
      commitment_cost: beta of the commitment loss.
      seed: of C and of W's initialisation.

    Variables: ``basis`` (C, float32 [K, D], not trainable), ``projection`` ([D, D]: rows of C
    times it) and ``projection_bias`` ([D]). `codebook` is ``C W + b``.
    """

    def build_state(self):
        k, d = self.num_embeddings, self.embedding_dim
        bound = d**-0.5  # torch's nn.Linear initialisation: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        self.basis = self.add_weight(
            name="basis",
            shape=(k, d),
            initializer=keras.initializers.RandomNormal(stddev=d**-0.5, seed=self.seed),
            trainable=False,
            autocast=False,
        )
        self.projection = self.add_weight(
            name="projection",
            shape=(d, d),
            initializer=keras.initializers.RandomUniform(-bound, bound, self.seed + 1),
            autocast=False,
        )
        self.projection_bias = self.add_weight(
            name="projection_bias",
            shape=(d,),
            initializer=keras.initializers.RandomUniform(-bound, bound, self.seed + 2),
            autocast=False,
        )

    @property
    def codebook(self):
        """``C W + b``, float32 [K, D] (differentiable in W and b)."""
        self._ensure_built()
        return tf.matmul(self.basis, self.projection) + self.projection_bias

    def indices_of(self, z, codebook=None):
        return nearest_codes(z, self.codebook if codebook is None else codebook)

    def call(self, z, training=False):
        dims = tf.shape(z)
        flat = tf.reshape(z, [-1, self.embedding_dim])
        codebook = self.codebook
        indices = nearest_rows(flat, codebook)
        quantized = tf.gather(codebook, indices)  # (its gradient reaches W and b)
        commitment = self.commitment_cost * tf.reduce_mean(tf.square(flat - tf.stop_gradient(quantized)))
        codebook_loss = tf.reduce_mean(tf.square(tf.stop_gradient(flat) - quantized))
        return {
            "quantized": tf.reshape(straight_through(flat, quantized), dims),
            "indices": tf.reshape(indices, dims[:-1]),
            "codebook_loss": codebook_loss,
            "commitment_loss": commitment,
            "perplexity": batch_perplexity(indices, self.num_embeddings, training),
        }
