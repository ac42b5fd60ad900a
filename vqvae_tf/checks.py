"""Input checks that hold in graphs, SavedModels and on GPUs.

`tf.debugging.assert_*` ops gated only by control dependencies can be reordered by Grappler
(seen here: an embedding gather inside a while loop ran before its range assert), and a GPU gather
returns zeros for out-of-range indices instead of failing. So a checked value is returned *through*
a `tf.cond` whose failing branch raises InvalidArgumentError: whatever consumes it cannot run
before the check. Under XLA, Assert is a no-op.
"""

from __future__ import annotations

import tensorflow as tf


def require(x, condition, *message):
    """`x`, once scalar bool `condition` holds; otherwise InvalidArgumentError(message...)."""

    def fail():
        with tf.control_dependencies([tf.debugging.Assert(False, list(message), summarize=8)]):
            return tf.identity(x)

    return tf.cond(condition, lambda: tf.identity(x), fail)


def in_range(x, low, high, name: str):
    """Integer tensor `x` with every value in [low, high); the error names the offending range."""
    x = tf.convert_to_tensor(x)
    empty = tf.equal(tf.size(x), 0)
    ok = tf.logical_or(empty, tf.logical_and(tf.reduce_min(x) >= low, tf.reduce_max(x) < high))
    return require(
        x, ok, f"{name} must be in [{low}, {high}): found values from", tf.reduce_min(x), "to", tf.reduce_max(x)
    )
