"""`CodebookUsage`: code counts over a whole dataset (perplexity and the fraction of codes used)."""

from __future__ import annotations

import keras
import tensorflow as tf

from vqvae_tf.layers import SERIALIZATION_PACKAGE
from vqvae_tf.layers.quantizers.ops import perplexity_from_counts
from vqvae_tf.utils import checks


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class CodebookUsage(keras.metrics.Metric):
    """Code counts accumulated over many batches (a whole dataset), summed across replicas.

    `update_state(indices)` takes int codes of any shape (with ``num_codebooks > 1``, e.g. a
    residual quantizer's, the last axis is the codebook); `result()` returns a dict with
    ``perplexity`` (exp entropy of the accumulated usage) and ``codebook_usage`` (fraction of
    the K codes used at least once), each the mean over the codebooks. `counts()` gives the raw
    float32 ``[K]`` counts (``[num_codebooks, K]`` for several codebooks).
    """

    def __init__(self, num_embeddings: int, num_codebooks: int = 1, name: str = "codebook_usage", **kwargs):
        super().__init__(name=name, **kwargs)
        checks.positive_int("num_embeddings", num_embeddings)
        checks.positive_int("num_codebooks", num_codebooks)
        self.num_embeddings = int(num_embeddings)
        self.num_codebooks = int(num_codebooks)
        self._counts = self.add_variable(
            shape=(self.num_codebooks * self.num_embeddings,), initializer="zeros", dtype="float32", name="counts"
        )

    def update_state(self, indices, sample_weight=None):
        indices = tf.cast(indices, tf.int32)
        if self.num_codebooks > 1:  # codebook c's codes count in [c K, (c + 1) K)
            indices = indices + tf.range(self.num_codebooks) * self.num_embeddings
        flat = tf.reshape(indices, [-1])
        size = self.num_codebooks * self.num_embeddings
        self._counts.assign_add(tf.math.unsorted_segment_sum(tf.ones_like(flat, tf.float32), flat, size))

    def counts(self):
        counts = tf.convert_to_tensor(self._counts)
        return counts if self.num_codebooks == 1 else tf.reshape(counts, [self.num_codebooks, self.num_embeddings])

    def result(self):
        counts = tf.reshape(self.counts(), [self.num_codebooks, self.num_embeddings])
        return {
            "perplexity": tf.reduce_mean(tf.map_fn(perplexity_from_counts, counts)),
            "codebook_usage": tf.reduce_mean(tf.cast(counts > 0, tf.float32)),
        }

    def get_config(self):
        return {
            "num_embeddings": self.num_embeddings,
            "num_codebooks": self.num_codebooks,
            "name": self.name,
            "dtype": self.dtype,
        }
