"""tf.distribute helpers shared by layers and models (no training-loop code here)."""

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
