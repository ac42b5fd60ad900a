"""The arithmetic quantizers share: distances, nearest codes, the two gradient estimators,
perplexity and binary entropies. Pure functions of tensors (no layer state)."""

from __future__ import annotations

import tensorflow as tf

DISTANCES = ("euclidean", "cosine")
GRADIENTS = ("straight_through", "rotation")


def squared_distances(flat, codebook):
    """||z||^2 - 2 z.e + ||e||^2, float32 [N, K]."""
    return (
        tf.reduce_sum(tf.square(flat), axis=1, keepdims=True)
        - 2.0 * tf.matmul(flat, codebook, transpose_b=True)
        + tf.reduce_sum(tf.square(codebook), axis=1)[tf.newaxis, :]
    )


# Codebooks of at least this many codes find their best codes in blocks of rows (`best_rows`), so
# that the [N, K] distances or logits are never held whole (at K = 16,384 and a batch of 64 16x16
# grids they would be 1 GiB); smaller ones in one matrix, the graph they always had (TFLite files
# included).
BLOCKED_FROM_K = 16384
BLOCK_ELEMENTS = 1 << 24  # the scores computed at once in a block: 64 MiB of float32


def block_rows(k: int) -> int:
    """Rows per block of a [rows, k] float32 score matrix of about `BLOCK_ELEMENTS` elements."""
    return max(1, BLOCK_ELEMENTS // k)


def best_rows(flat, codebook, score: str = "distance", num_valid=None):
    """Per row of flat float32 [N, D], the codebook row of least squared distance (``score=
    "distance"``) or of largest dot product (``"dot"``): int32 [N], no gradient. Codebooks of
    `BLOCKED_FROM_K` codes or more are scored `block_rows` rows at a time, and then with
    `num_valid` (an int32 scalar) the blocks wholly past the first `num_valid` rows are skipped
    (their results are 0: padding, e.g. of k-means' sample)."""

    def best(block):
        if score == "dot":
            return tf.argmax(tf.matmul(block, codebook, transpose_b=True), axis=1, output_type=tf.int32)
        return tf.argmin(squared_distances(block, codebook), axis=1, output_type=tf.int32)

    k = codebook.shape[0]
    if k is None or k < BLOCKED_FROM_K:
        return best(flat)
    flat, codebook = tf.stop_gradient(flat), tf.stop_gradient(codebook)
    n = tf.shape(flat)[0]
    blocks, _ = row_blocks(flat, k)
    rows = block_rows(k)

    def best_block(args):
        block, start = args
        if num_valid is None:
            return best(block)
        return tf.cond(start < num_valid, lambda: best(block), lambda: tf.zeros([rows], tf.int32))

    indices = tf.map_fn(
        best_block,
        (blocks, tf.range(tf.shape(blocks)[0]) * rows),
        fn_output_signature=tf.int32,
        parallel_iterations=1,  # (one block's scores alive at a time)
    )
    return tf.reshape(indices, [-1])[:n]


def row_blocks(x, k: int):
    """x's rows [N, D] zero-padded into ``[blocks, block_rows(k), D]`` and a float32 mask of the
    real rows ``[blocks, rows]``: what a blocked reduction maps over with `tf.map_fn`."""
    rows = block_rows(k)
    n = tf.shape(x)[0]
    blocks = (n + rows - 1) // rows
    padded = tf.pad(x, [[0, blocks * rows - n], [0, 0]])
    valid = tf.reshape(tf.cast(tf.range(blocks * rows) < n, x.dtype), [blocks, rows])
    return tf.reshape(padded, [blocks, rows, x.shape[-1] or tf.shape(x)[-1]]), valid


def nearest_rows(flat, codebook, num_valid=None):
    """Index of the nearest codebook row for each row: flat float32 [N, D] -> int32 [N] (no gradient;
    `num_valid`: as `best_rows`')."""
    return best_rows(flat, codebook, "distance", num_valid)


def nearest_codes(z, codebook):
    """Index of the nearest codebook row for each vector: z float [..., D] -> int32 [...]."""
    flat = tf.reshape(tf.cast(z, tf.float32), [-1, tf.shape(codebook)[1]])
    return tf.reshape(nearest_rows(flat, codebook), tf.shape(z)[:-1])


def straight_through(z, q):
    """Forward: `q`; backward: the identity to `z` (section 3.1 of the VQ-VAE paper)."""
    return z + tf.stop_gradient(q - z)


def rotation_trick(z, q, eps: float = 1e-6):
    """Forward: `q` exactly; backward: d/dz = (lambda R)^T, rows [N, D] float32.

    R is the rotation that takes the direction of z to that of q (and is the identity on the
    plane's complement) and lambda = ||q|| / ||z||, both treated as constants (Fifty et al. 2024,
    section 4.2: ``R = I - 2 w w^T + 2 q^ z^T`` with ``w = (z^ + q^) / ||z^ + q^||``, applied
    without forming R). So the gradient that reaches z is the decoder's gradient at q rotated
    back into z's frame, carrying the angle between them, instead of copied unchanged."""
    z_norm = tf.norm(z, axis=-1, keepdims=True)
    q_norm = tf.norm(q, axis=-1, keepdims=True)
    u = tf.stop_gradient(tf.math.divide_no_nan(z, z_norm))
    v = tf.stop_gradient(tf.math.divide_no_nan(q, q_norm))
    w = tf.stop_gradient(tf.math.l2_normalize(u + v, axis=-1, epsilon=1e-12))
    rotated = (
        z
        - 2.0 * tf.reduce_sum(z * w, axis=-1, keepdims=True) * w
        + 2.0 * tf.reduce_sum(z * u, axis=-1, keepdims=True) * v
    )
    scale = tf.stop_gradient(tf.where(z_norm > eps, q_norm / tf.maximum(z_norm, eps), tf.ones_like(z_norm)))
    out = rotated * scale
    return out + tf.stop_gradient(q - out)  # exact forward value; the gradient is out's


def gradient_estimator(name: str):
    """The function (z, q) -> output for `name` in `GRADIENTS`."""
    return rotation_trick if name == "rotation" else straight_through


def perplexity_from_counts(counts):
    """exp(entropy) of the code distribution given by `counts` [K] (0 counts allowed)."""
    counts = tf.cast(counts, tf.float32)
    probs = tf.math.divide_no_nan(counts, tf.reduce_sum(counts))
    return tf.exp(-tf.reduce_sum(tf.math.xlogy(probs, probs)))


def batch_perplexity(indices, num_embeddings: int, training: bool):
    """Perplexity of the codes `indices` (int32, any shape) of a batch; in training, under
    tf.distribute, of the global batch (the counts summed over replicas)."""
    from vqvae_tf.utils.distribute import sync_across_replicas

    flat = tf.reshape(indices, [-1])
    counts = tf.math.unsorted_segment_sum(tf.ones_like(flat, tf.float32), flat, num_embeddings)
    if training:
        counts = sync_across_replicas({"counts": counts})[0]["counts"]
    return perplexity_from_counts(counts)


def entropy(probs, axis=-1):
    """Entropy in nats of the distributions `probs` along `axis` (0 log 0 = 0)."""
    return -tf.reduce_sum(tf.math.xlogy(probs, probs), axis=axis)


def binary_entropy(p):
    """Entropy in nats of Bernoulli(p), elementwise."""
    return -(tf.math.xlogy(p, p) + tf.math.xlogy(1.0 - p, 1.0 - p))


def bits_to_indices(bits):
    """bool ``[..., D]`` -> int32 ``[...]``: sum_i bits_i 2^i (bit i is channel i)."""
    weights = tf.bitwise.left_shift(tf.ones([bits.shape[-1]], tf.int32), tf.range(bits.shape[-1], dtype=tf.int32))
    return tf.reduce_sum(tf.cast(bits, tf.int32) * weights, axis=-1)


def indices_to_signs(indices, num_bits: int):
    """int ``[...]`` -> float32 ``[..., num_bits]`` in {-1, +1}: the inverse of `bits_to_indices`."""
    bits = tf.bitwise.bitwise_and(tf.bitwise.right_shift(indices[..., None], tf.range(num_bits, dtype=tf.int32)), 1)
    return tf.cast(2 * bits - 1, tf.float32)
