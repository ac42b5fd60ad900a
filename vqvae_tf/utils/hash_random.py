"""Seeded uniform numbers from an integer hash, the same in TensorFlow's graph and under XLA.

The samplers draw with these, not with ``tf.random.stateless_*``: XLA's Philox maps its key and
counter to other bits than TensorFlow's CPU kernel (and ``stateless_categorical`` draws differ
too), so a jit-compiled sampler would pick other codes for the same seed. Integer multiply, xor
and shift are exact everywhere, so these give bit-identical numbers in both.

``uniform(seed, stream, shape)``: element i (row-major) is ``mix(base + i * 0x9E3779B9) >> 8``
over 2**24, with ``base = mix(mix(seed) ^ stream)`` and ``mix`` Wellons' "lowbias32" (32-bit
unsigned arithmetic); seed and stream are int32 (bit-cast), e.g. a sampler's seed and a position.
"""

from __future__ import annotations

import tensorflow as tf

_GOLDEN = 0x9E3779B9


def mix(x):
    """lowbias32: a 32-bit integer hash (uint32 -> uint32)."""
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))
    x = x * tf.constant(0x7FEB352D, tf.uint32)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 15))
    x = x * tf.constant(0x846CA68B, tf.uint32)
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))


def uniform(seed, stream, shape):
    """float32 `shape` in [0, 1) (multiples of 2**-24) determined by int32 scalars seed and stream."""
    seed = tf.bitcast(tf.cast(seed, tf.int32), tf.uint32)
    stream = tf.bitcast(tf.cast(stream, tf.int32), tf.uint32)
    base = mix(tf.bitwise.bitwise_xor(mix(seed), stream))
    index = tf.cast(tf.range(tf.reduce_prod(shape)), tf.uint32)
    bits = mix(base + index * tf.constant(_GOLDEN, tf.uint32))
    values = tf.cast(tf.bitwise.right_shift(bits, 8), tf.float32) * (1.0 / 16777216.0)
    return tf.reshape(values, shape)
