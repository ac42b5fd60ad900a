"""tf.distribute helpers shared by layers and models (no training-loop code here): loss scaling
and the replica collectives that keep stateful layers (EMA codebooks, k-means, FSQ's data init,
entropy penalties) exact under a strategy."""

from __future__ import annotations

import tensorflow as tf


def num_replicas() -> int:
    """Replicas of the step being traced (1 outside a tf.distribute replica context)."""
    ctx = tf.distribute.get_replica_context()
    return ctx.num_replicas_in_sync if ctx is not None else 1


def replica_scaled(loss):
    """The per-replica mean `loss` divided by the replica count. Each replica sees its share of the
    global batch and gradients are summed across replicas, so this makes the summed gradient that
    of the global-batch mean (Keras' own losses do the same; a hand-written mean does not)."""
    return loss / num_replicas()


def replica_context():
    """The replica context of a step on several replicas, else None (one replica, or outside a step)."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return None
    return ctx


def _own_slot(ctx):
    """One-hot float32 [num_replicas] of this replica: its slot in an all-reduce used as a gather."""
    return tf.one_hot(ctx.replica_id_in_sync_group, ctx.num_replicas_in_sync, dtype=tf.float32)


def sync_across_replicas(summed: dict, gathered: dict | None = None) -> tuple[dict, dict]:
    """In ONE all-reduce: sums `summed` over replicas and stacks every replica's `gathered` value
    into ``[num_replicas, ...]`` (each replica writes its own slot of a zero tensor, so the sum is
    a gather; the replicas' values must have equal shapes). Separate collectives in one step may
    run in different orders on different replicas (a shape-mismatch abort), so a phase packs its
    tensors together. Outside a multi-replica step: identity (gathered values get a leading axis
    of 1). Values travel as float32: integers must stay below 2**24. Differentiable: the gradient
    of an all-reduce is the all-reduce of the gradients, so a loss computed from the summed values
    (identical on every replica) and scaled by `replica_scaled` gets the global batch's gradient."""
    gathered = gathered or {}
    ctx = replica_context()
    if ctx is None:
        return dict(summed), {k: v[tf.newaxis] for k, v in gathered.items()}
    slot = _own_slot(ctx)
    items = [(k, tf.cast(v, tf.float32), False) for k, v in summed.items()]
    items += [
        (k, tf.reshape(slot, [-1] + [1] * v.shape.rank) * tf.cast(v, tf.float32)[tf.newaxis], True)
        for k, v in gathered.items()
    ]
    packed = ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.concat([tf.reshape(v, [-1]) for _, v, _ in items], 0))
    parts = tf.split(packed, tf.stack([tf.size(v) for _, v, _ in items]), num=len(items))
    out_sum, out_gathered = {}, {}
    for (key, value, is_gathered), part in zip(items, parts):
        source, out = (gathered, out_gathered) if is_gathered else (summed, out_sum)
        out[key] = tf.cast(tf.reshape(part, tf.shape(value)), source[key].dtype)
    return out_sum, out_gathered


def replica_offset(num_vectors):
    """(Rows of the global batch before this replica's, rows of the global batch). MirroredStrategy
    splits a global batch into consecutive chunks in replica order, so offset + i is row i's
    index in the global batch. A small all-reduce of its own, which every later one depends on."""
    ctx = replica_context()
    if ctx is None:
        return tf.zeros([], tf.int32), num_vectors
    slot = _own_slot(ctx)
    per_replica = tf.cast(ctx.all_reduce(tf.distribute.ReduceOp.SUM, slot * tf.cast(num_vectors, tf.float32)), tf.int32)
    before = tf.range(ctx.num_replicas_in_sync) < ctx.replica_id_in_sync_group
    return tf.reduce_sum(tf.where(before, per_replica, 0)), tf.reduce_sum(per_replica)
