"""VQ-VAE's vector quantiser with an EMA codebook (arXiv:1711.00937, appendix A.1)."""

from __future__ import annotations

import keras
import tensorflow as tf

from vqvae_tf.layers import SERIALIZATION_PACKAGE
from vqvae_tf.layers.quantizers import options
from vqvae_tf.layers.quantizers.registry import register_quantizer
from vqvae_tf.layers.quantizers.vq import CODEBOOK_OPTIONS, VectorQuantizer


@register_quantizer("ema", *CODEBOOK_OPTIONS, options.DECAY, help="EMA codebook (paper app. A.1), the default")
@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class VectorQuantizerEMA(VectorQuantizer):
    """Vector quantiser whose codebook follows exponential moving averages (paper appendix A.1).

    With n_i the number of encoder outputs assigned to code i in a step and s_i their sum:
    ``N_i <- decay N_i + (1 - decay) n_i``, ``m_i <- decay m_i + (1 - decay) s_i``,
    ``e_i = m_i / N~_i`` with Laplace smoothing ``N~_i = (N_i + eps) / (sum N + K eps) * sum N``.
    State starts at ``N_i = 1, m_i = e_i`` so the codebook is unchanged until data arrives.
    Counts and sums are summed over replicas under `tf.distribute`.

    Args:
      num_embeddings, embedding_dim, commitment_cost: as in `VectorQuantizer`.
      decay: EMA decay (0.99 in the paper).
      epsilon: Laplace smoothing constant.
      **kwargs: the remaining `VectorQuantizer` arguments (dead-code restart, k-means init, seed)
        and Keras layer arguments.

    The codebook variables are non-trainable; ``codebook_loss`` is 0; the state changes only when
    called with ``training=True``.
    """

    _codebook_trainable = False

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        commitment_cost: float = 0.25,
        decay: float = 0.99,
        epsilon: float = 1e-5,
        **kwargs,
    ):
        kwargs.setdefault("usage_decay", decay)
        super().__init__(num_embeddings, embedding_dim, commitment_cost, **kwargs)
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}.")
        if not epsilon > 0:
            raise ValueError(f"epsilon must be > 0, got {epsilon}.")
        self.decay = float(decay)
        self.epsilon = float(epsilon)

    def _build_extra_state(self):
        self.ema_cluster_size = self.add_weight(
            name="ema_cluster_size",
            shape=(self.num_embeddings,),
            initializer="ones",
            trainable=False,
            autocast=False,
            aggregation="only_first_replica",
        )
        self.ema_dw = self.add_weight(
            name="ema_dw",
            shape=(self.num_embeddings, self.embedding_dim),
            initializer="zeros",
            trainable=False,
            autocast=False,
            aggregation="only_first_replica",
        )
        self.ema_dw.assign(self._codebook)

    def _codebook_loss(self, flat, quantized_flat, num_elements):
        return tf.zeros([], tf.float32)

    def _extra_statistics(self, flat, indices_flat) -> dict:
        return {"sums": tf.math.unsorted_segment_sum(flat, indices_flat, self.num_embeddings)}

    def _ema_update(self, summed):
        d = self.decay
        cluster_size = d * self.ema_cluster_size + (1.0 - d) * summed["counts"]
        dw = d * self.ema_dw + (1.0 - d) * summed["sums"]
        self.ema_cluster_size.assign(cluster_size)
        self.ema_dw.assign(dw)
        self._codebook.assign(dw / self._smoothed_cluster_size(cluster_size)[:, None])

    def _smoothed_cluster_size(self, cluster_size):
        n = tf.reduce_sum(cluster_size)
        k_eps = self.num_embeddings * self.epsilon
        return (cluster_size + self.epsilon) / (n + k_eps) * n

    def _set_codes(self, mask, vectors, sizes):
        # Keep the EMA state consistent with the new rows: N_i = the vectors per step each new row
        # stands for (its k-means cluster size, or max(1, threshold) for a restart), m_i = e_i N~_i,
        # so that the codebook is exactly `vectors` and the next update starts from there.
        cluster_size = tf.where(mask, sizes, self.ema_cluster_size)
        self.ema_cluster_size.assign(cluster_size)
        self.ema_dw.assign(
            tf.where(mask[:, None], vectors * self._smoothed_cluster_size(cluster_size)[:, None], self.ema_dw)
        )
        self._codebook.assign(self.ema_dw / self._smoothed_cluster_size(cluster_size)[:, None])

    def get_config(self):
        config = super().get_config()
        config.update(decay=self.decay, epsilon=self.epsilon)
        return config
