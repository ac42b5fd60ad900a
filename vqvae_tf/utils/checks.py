"""Input checks: in-graph checks that hold in SavedModels and on GPUs, and Python argument checks.

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


def positive_int(name: str, value) -> int:
    """`value` if it is a positive Python int (not a bool); otherwise ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return value


def one_of(name: str, value, choices) -> None:
    """ValueError naming `name` unless `value` is one of `choices`."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}.")


def batch_of(x, name: str, item_shape, integer: bool, kind: str):
    """`x` as a tensor of a batch of items of `item_shape`, checked where its static shape and dtype
    are known: TypeError unless its dtype is integer (`integer`) or floating (`kind` names it in
    the message), ValueError unless its shape is [B, *item_shape]."""
    x = tf.convert_to_tensor(x)
    if not (x.dtype.is_integer if integer else x.dtype.is_floating):
        raise TypeError(f"{name} must be {kind}, got dtype {x.dtype.name}.")
    item_shape = tuple(item_shape)
    if x.shape.rank is not None and (
        x.shape.rank != len(item_shape) + 1 or not x.shape[1:].is_compatible_with(item_shape)
    ):
        raise ValueError(f"{name} must have shape [B, {', '.join(map(str, item_shape))}], got {x.shape}.")
    return x
