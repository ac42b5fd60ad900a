"""`PriorInputs`: the input checks of `PixelCNN` (codes, class labels, spatial conditioning),
each raising at the boundary with the offending value named (in graph, where only known then)."""

from __future__ import annotations

import tensorflow as tf

from vqvae_tf.utils import checks


class PriorInputs:
    """Mixin for a prior with ``latent_shape``, ``num_embeddings``, ``num_classes``,
    ``condition_shape`` and ``condition_embeddings``."""

    def check_codes(self, codes):
        codes = checks.batch_of(codes, "codes", self.latent_shape, integer=True, kind="integers")
        return checks.in_range(tf.cast(codes, tf.int32), 0, self.num_embeddings, "codes")

    def check_labels(self, labels, batch_size=None):
        if self.num_classes == 0:
            if labels is not None:
                raise ValueError("This prior is unconditional (num_classes=0) but labels were given.")
            return None
        if labels is None:
            raise ValueError(f"This prior is class-conditional (num_classes={self.num_classes}): pass labels.")
        labels = tf.convert_to_tensor(labels)
        if not labels.dtype.is_integer:
            raise TypeError(f"labels must be integers, got dtype {labels.dtype.name}.")
        labels = checks.in_range(tf.reshape(tf.cast(labels, tf.int32), [-1]), 0, self.num_classes, "labels")
        if batch_size is not None:
            labels = checks.require(
                labels,
                tf.equal(tf.size(labels), batch_size),
                "labels must be one per sample: got",
                tf.size(labels),
                "labels for",
                batch_size,
                "samples",
            )
        return labels

    def check_condition(self, condition, batch_size=None):
        """Spatial conditioning codes int32 ``[B, *condition_shape]`` in range (None without)."""
        if self.condition_shape is None:
            if condition is not None:
                raise ValueError("This prior has no spatial conditioning but a condition was given.")
            return None
        if condition is None:
            raise ValueError(
                f"This prior is conditioned on a {self.condition_shape[0]}x{self.condition_shape[1]} code grid: "
                "pass condition."
            )
        condition = checks.batch_of(condition, "condition codes", self.condition_shape, integer=True, kind="integers")
        condition = checks.in_range(tf.cast(condition, tf.int32), 0, self.condition_embeddings, "condition codes")
        if batch_size is not None:
            condition = checks.require(
                condition,
                tf.equal(tf.shape(condition)[0], batch_size),
                "condition codes must be one grid per sample: got",
                tf.shape(condition)[0],
                "for",
                batch_size,
            )
        return condition
