"""IBQ: index backpropagation quantization.

"Scalable Image Tokenization with Index Backpropagation Quantization", Shi, Luo, Ge, Yang, Shan,
Wang (2024), arXiv:2412.02692; reference code: github.com/TencentARC/SEED-Voken
(IndexPropagationQuantize). The code of z is the argmax of the logits ``z . e_k`` (a dot product,
not a distance); the output is ``one_hot @ E`` with the straight-through one-hot
``hard - sg[softmax(logits)] + softmax(logits)``: its value is the chosen code, and its gradient
passes through the softmax to every code row and to z, so the whole codebook moves with the
encoder at each step (the paper's remedy for collapse), and the decoder's gradient reaches z only
through the logits (no straight-through copy of it).

Losses as the reference's: the double quantization loss ``||(one_hot @ E) - z||^2`` (its
gradient through the soft one-hot too), ``||sg[e] - z||^2`` and ``||e - sg[z]||^2`` with ``e =
hard @ E``, means over elements. Where we deviate: the reference weights the last term (the
codebook's) by beta and the commitment by 1, taming-transformers' "legacy" order, which that code
itself calls a bug; we put beta (``commitment_cost``) on the commitment, as the VQ-VAE paper and
every quantizer of the zoo. ``codebook_loss`` reports the codebook term plus the double
quantization loss. The reference's optional entropy penalty (``use_entropy_loss``) is not
implemented. The codebook is initialised N(0, 1), as the reference's ``nn.Embedding``.

Memory: the [N, K] softmax is never held whole for K >= 16,384. The forward pass needs only the
argmax (`ops.best_rows`, blocked) and the gather; the backward pass is a custom gradient that
recomputes the softmax block by block (`ops.block_rows` rows at a time), so a training step at
K = 16,384 keeps one block's [rows, K] logits alive instead of the several [N, K] tensors that
automatic differentiation would keep.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from vqvae_tf.layers import SERIALIZATION_PACKAGE
from vqvae_tf.layers.quantizers import options
from vqvae_tf.layers.quantizers.base import GatheredCodebookQuantizer
from vqvae_tf.layers.quantizers.ops import BLOCKED_FROM_K, batch_perplexity, best_rows, block_rows
from vqvae_tf.layers.quantizers.registry import register_quantizer


def _softmax_backward(z, codebook, upstream):
    """d/dz and d/dE of ``softmax(z E^T) @ E`` against `upstream` [N, D], rows computed in blocks
    for K >= `BLOCKED_FROM_K` (one block's [rows, K] alive at a time). The softmax's vector-Jacobian
    product: ``g_logits = p * (g E^T - sum(p * g E^T))``; then ``dz = g_logits E`` and ``dE =
    g_logits^T z + p^T g``. (The caller replaces p^T g by hard^T g: the one-hot's value is hard.)"""

    def block(zb, gb):
        p = tf.nn.softmax(tf.matmul(zb, codebook, transpose_b=True))
        gp = tf.matmul(gb, codebook, transpose_b=True)
        g_logits = p * (gp - tf.reduce_sum(p * gp, axis=1, keepdims=True))
        return tf.matmul(g_logits, codebook), tf.matmul(g_logits, zb, transpose_a=True)

    k = codebook.shape[0]
    if k is None or k < BLOCKED_FROM_K:
        return block(z, upstream)
    rows = block_rows(k)
    n = tf.shape(z)[0]
    blocks = (n + rows - 1) // rows
    padding = [[0, blocks * rows - n], [0, 0]]
    zp, gp = tf.pad(z, padding), tf.pad(upstream, padding)  # padded rows: zero upstream, zero gradient

    def body(i, dz, de):
        dz_block, de_block = block(zp[i * rows : (i + 1) * rows], gp[i * rows : (i + 1) * rows])
        return i + 1, dz.write(i, dz_block), de + de_block

    _, dz, de = tf.while_loop(
        lambda i, *_: i < blocks,
        body,
        (tf.constant(0), tf.TensorArray(z.dtype, size=blocks), tf.zeros_like(codebook)),
        parallel_iterations=1,
    )
    return tf.reshape(dz.stack(), [-1, z.shape[-1]])[:n], de


def index_backprop(z, codebook):
    """IBQ's quantizer on rows: z float32 [N, D], codebook [K, D] -> (codes int32 [N], ``one_hot @
    E`` [N, D]). The value is ``E[argmax_k z . e_k]``; the gradient is that of the straight-through
    one-hot ``hard - sg[softmax] + softmax``, to z and to every codebook row."""
    indices = best_rows(z, codebook, "dot")

    @tf.custom_gradient
    def quantize(z, codebook):
        def grad(upstream):
            dz, de = _softmax_backward(z, codebook, upstream)
            hard = tf.math.unsorted_segment_sum(upstream, indices, tf.shape(codebook)[0])  # hard^T g
            return dz, de + hard

        return tf.gather(codebook, indices), grad

    return indices, quantize(z, codebook)


@register_quantizer("ibq", options.COMMITMENT_COST, help="index backpropagation (IBQ): every code gets a gradient")
@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class IndexBackpropQuantizer(GatheredCodebookQuantizer):
    """IBQ (Shi et al. 2024): argmax of ``z . e_k``, a straight-through one-hot over the softmax.

    Args:
      num_embeddings, embedding_dim: K and D.
      commitment_cost: beta of the commitment loss ``||z - sg[e]||^2`` (see the module docstring
        for where the reference puts it).
      seed: of the codebook's initialisation.
      **kwargs: passed to `keras.layers.Layer`.

    Returns the contract's dict. In training, ``quantized`` has the chosen codes' value and the
    index-backpropagation gradient (to z through the logits, to every code row); outside training
    it is the chosen code with no gradient path to z but the codebook's (the reference's eval
    branch). ``codebook_loss`` = ``||e - sg[z]||^2`` + the double quantization loss
    ``||(one_hot @ E) - z||^2``; ``commitment_loss`` = ``beta ||z - sg[e]||^2``.

    Example:
    >>> ibq = IndexBackpropQuantizer(num_embeddings=4, embedding_dim=2)
    >>> ibq.build((None, 2))
    >>> _ = ibq.codebook_variable.assign([[1., 0.], [0., 1.], [-1., 0.], [0., -1.]])
    >>> ibq(tf.constant([[0.2, -3.0]]))["indices"].numpy().tolist()
    [3]
    """

    def build_state(self):
        self.codebook_variable = self.add_weight(
            name="codebook",
            shape=(self.num_embeddings, self.embedding_dim),
            initializer=keras.initializers.RandomNormal(stddev=1.0, seed=self.seed),
            autocast=False,
        )

    @property
    def codebook(self):
        self._ensure_built()
        return tf.convert_to_tensor(self.codebook_variable)

    def indices_of(self, z, codebook=None):
        codebook = self.codebook if codebook is None else codebook
        flat = tf.reshape(tf.cast(z, tf.float32), [-1, self.embedding_dim])
        return tf.reshape(best_rows(flat, codebook, "dot"), tf.shape(z)[:-1])

    def call(self, z, training=False):
        dims = tf.shape(z)
        flat = tf.reshape(z, [-1, self.embedding_dim])
        codebook = self.codebook
        if training:
            indices, quantized = index_backprop(flat, codebook)
            hard = tf.gather(codebook, indices)
            double = tf.reduce_mean(tf.square(quantized - flat))
        else:
            indices = best_rows(flat, codebook, "dot")
            quantized = hard = tf.gather(codebook, indices)
            double = tf.reduce_mean(tf.square(tf.stop_gradient(hard) - flat))
        commitment = self.commitment_cost * tf.reduce_mean(tf.square(tf.stop_gradient(hard) - flat))
        codebook_loss = tf.reduce_mean(tf.square(hard - tf.stop_gradient(flat))) + double
        return {
            "quantized": tf.reshape(quantized, dims),
            "indices": tf.reshape(indices, dims[:-1]),
            "codebook_loss": codebook_loss,
            "commitment_loss": commitment,
            "perplexity": batch_perplexity(indices, self.num_embeddings, training),
        }
