"""Lookup-free quantization (LFQ).

"Language Model Beats Diffusion: Tokenizer is Key to Visual Generation", Yu et al. (2023),
arXiv:2310.05737 (MAGVIT-v2), section 3.1: each of the D channels is quantized to its sign,
q = sign(z) in {-1, +1}^D, the index is the binary number of the signs (K = 2^D, no codebook to
look up or learn), and an entropy penalty E[H(q(z))] - H(E[q(z)]) (eq. 3) makes each assignment
confident and the codes of a batch diverse. q(z) is the softmax over the K codes of 2 z.c / tau,
which factorises: channel i is +1 with probability sigmoid(4 z_i / tau) (the per-sample entropy is a
sum over channels). The batch term is computed exactly over the K codes: in one [rows, K] matrix
below K = 16,384, and above in blocks of rows with a custom gradient (`summed_code_probs`), so that
14 or 16 bits fit in memory at training batch sizes; hence `max_bits` = 16.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from vqvae_tf.layers import SERIALIZATION_PACKAGE
from vqvae_tf.layers.quantizers.binary import BINARY_OPTIONS, BinaryQuantizer
from vqvae_tf.layers.quantizers.ops import BLOCKED_FROM_K, binary_entropy, entropy, indices_to_signs, row_blocks
from vqvae_tf.layers.quantizers.registry import register_quantizer


@register_quantizer(
    "lfq", *BINARY_OPTIONS, help="lookup-free quantization (MAGVIT-v2): signs of D channels, K = 2^D, entropy penalty"
)
@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class LookupFreeQuantizer(BinaryQuantizer):
    """Lookup-free quantizer (MAGVIT-v2) with the zoo's quantizer contract.

    Args:
      embedding_dim: D, the bits per code (<= 16); K = 2^D.
      entropy_weight: weight of the entropy penalty in the loss (``entropy_loss``).
      commitment_cost: beta of the commitment loss mean ||z - sg[q]||^2.
      diversity_weight: gamma, weight of the batch entropy inside the penalty:
        ``entropy_weight * (E[H(q(z))] - gamma * H(E[q(z)]))``.
      entropy_temperature: tau of the soft assignments (None: 0.01, as lucidrains' LFQ).
      num_embeddings: must be 2^D when given.
      **kwargs: passed to `keras.layers.Layer`.

    Returns the contract's dict: ``quantized`` = sign(z) in {-1, +1} (forward; the gradient is the
    identity to z), ``indices`` = sum_i [z_i > 0] 2^i, ``commitment_loss``, ``entropy_loss`` (over
    the global batch under tf.distribute), ``perplexity``; ``codebook_loss`` is 0.

    Example:
    >>> lfq = LookupFreeQuantizer(embedding_dim=4)
    >>> out = lfq(tf.constant([[0.3, -1.0, 2.0, -0.1]]))
    >>> int(out["indices"][0])      # bits 0 and 2 set
    5
    """

    max_bits = 16
    default_temperature = 0.01

    def entropy_terms(self, projected, temperature):
        p = tf.sigmoid(4.0 * projected / temperature)  # P(channel i = +1)
        sample_entropy = tf.reduce_sum(binary_entropy(p))
        signs = indices_to_signs(tf.range(self.num_embeddings), self.embedding_dim)  # [K, D]
        statistics = {"code_probs": summed_code_probs(4.0 * projected / temperature, tf.cast(signs > 0, tf.float32))}

        def batch_entropy(summed):
            return entropy(tf.math.divide_no_nan(summed["code_probs"], summed["count"]))

        return sample_entropy, statistics, batch_entropy


def _code_probs(logits, plus):
    """q(c | z) for every row and code: exp of the sum over channels of log sigmoid(+-logit), float32
    [N, K] (`plus` [K, D]: 1 where code c's bit i is set)."""
    return tf.exp(
        tf.matmul(tf.math.log_sigmoid(logits), plus, transpose_b=True)
        + tf.matmul(tf.math.log_sigmoid(-logits), 1.0 - plus, transpose_b=True)
    )


def summed_code_probs(logits, plus):
    """sum over rows of q(c | z), float32 [K], for logits 4 z / tau [N, D]. From K = 16,384 on, rows
    are taken `ops.block_rows` at a time, forward and backward (a custom gradient: d/d logit_i of
    q(c) is q(c) (bit_i(c) - sigmoid(logit_i)), so the [N, K] matrix is never whole)."""
    k = plus.shape[0]
    if k < BLOCKED_FROM_K:
        return tf.reduce_sum(_code_probs(logits, plus), axis=0)

    @tf.custom_gradient
    def blocked(logits):
        blocks, valid = row_blocks(logits, k)

        def block_sum(args):
            block, mask = args
            return tf.reduce_sum(_code_probs(block, plus) * mask[:, None], axis=0)

        total = tf.reduce_sum(tf.map_fn(block_sum, (blocks, valid), fn_output_signature=tf.float32), axis=0)

        def grad(upstream):
            def block_grad(block):
                weighted = _code_probs(block, plus) * upstream[None, :]  # [rows, K]
                return tf.matmul(weighted, plus) - tf.sigmoid(block) * tf.reduce_sum(weighted, axis=1, keepdims=True)

            grads = tf.map_fn(block_grad, blocks, fn_output_signature=tf.float32, parallel_iterations=1)
            return tf.reshape(grads, [-1, logits.shape[-1]])[: tf.shape(logits)[0]]

        return total, grad

    return blocked(logits)
