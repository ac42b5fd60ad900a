"""Codebook upkeep: the training-time state of a codebook quantizer, kept exact under tf.distribute.

Usage statistics (an EMA of assignments per code), dead-code restarts (Dhariwal et al. 2020's
"random restarts", as in Jukebox and lucidrains/vector-quantize-pytorch) and a k-means
initialisation from the first batch (NOTES: a codebook initialised at the wrong scale collapses).
Every draw is keyed by a row's index in the global batch, and every statistic travels in one packed
all-reduce per step (`utils.distribute.sync_across_replicas`), so a step on a batch split over
replicas equals a one-replica step on the whole batch. A restart skips a row equal to one drawn
before it or to its own code: a batch can repeat a value many times.

`CodebookUpkeep` is a mixin for a layer with ``num_embeddings``, ``embedding_dim``, ``seed``,
``usage_decay``, ``dead_code_threshold``, ``kmeans_init``, ``kmeans_iterations``,
``restart_grace_steps``, a ``_codebook`` variable and a ``codebook`` (the vectors as the
distance sees them); its subclass may keep more statistics
(`_extra_statistics`, `_ema_update`) and must keep them consistent when rows change (`_set_codes`).
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from vqvae_tf.layers.quantizers.ops import nearest_rows
from vqvae_tf.utils import distribute


def mix32(x):
    """A bijection of uint32 with good avalanche (the "lowbias32" integer hash)."""
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(16, tf.uint32)))
    x = x * tf.constant(0x7FEB352D, tf.uint32)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(15, tf.uint32)))
    x = x * tf.constant(0x846CA68B, tf.uint32)
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(16, tf.uint32)))


class CodebookUpkeep:
    """Usage statistics, dead-code restarts and k-means init for a codebook layer (see the module)."""

    num_restarts = None  # a variable once built (`build_upkeep_state`), in place of Quantizer's 0

    @property
    def grace_steps(self) -> int:
        """The restart grace period in force (see `restart_grace_steps`)."""
        if self.restart_grace_steps is not None:
            return self.restart_grace_steps
        return max(1, math.ceil(1.0 / (1.0 - self.usage_decay) - 1e-9))

    def build_upkeep_state(self) -> None:
        """The usage, step, restart and re-seed variables (after ``_codebook`` exists)."""
        self.code_usage = self._state("code_usage", (self.num_embeddings,), "float32")
        self.num_updates = self._state("num_updates", (), "int64")
        # Step (num_updates) of each code's last restart; -1: never restarted.
        self.restarted_at = self._state("restarted_at", (self.num_embeddings,), "int64", initializer=-1)
        self.reseeded = self._state("reseeded", (self.num_embeddings,), "float32")
        self.num_restarts = self._state("num_restarts", (), "int64")

    def _state(self, name, shape, dtype, initializer=0):
        # Every value assigned to the state is identical on all replicas (all-reduced or
        # broadcast first), hence "only_first_replica".
        return self.add_weight(
            name=name,
            shape=shape,
            initializer=keras.initializers.Constant(initializer),
            dtype=dtype,
            trainable=False,
            autocast=False,
            aggregation="only_first_replica",
        )

    def reset_upkeep(self) -> None:
        """The next training call runs the k-means install again; usage, restarts and their grace
        periods start afresh."""
        self.num_updates.assign(0)
        self.code_usage.assign(tf.zeros_like(self.code_usage))
        self.restarted_at.assign(tf.fill(tf.shape(self.restarted_at), tf.constant(-1, tf.int64)))
        self.reseeded.assign(tf.zeros_like(self.reseeded))
        self.num_restarts.assign(0)

    def _row_keys(self, global_index, step, salt):
        """Pseudo-random, distinct keys (float64 in [0, 2**32)) of rows by their index in the
        global batch: a bijective hash of the index, seeded by (seed, step, salt). Every replica
        split of a batch gives every row the same key, so draws do not depend on the split."""
        step = tf.cast(step * 4 + salt, tf.uint32)
        mix = mix32(tf.bitwise.bitwise_xor(mix32(tf.constant(self.seed % 2**32, tf.uint32)), step))
        other = mix32(mix + tf.constant(0x9E3779B9, tf.uint32))
        keys = mix32(tf.bitwise.bitwise_xor(mix32(tf.cast(global_index, tf.uint32) + mix), other))
        return tf.cast(keys, tf.float64)

    def _local_draw(self, flat, keys, size):
        """This replica's `size` rows of largest key (padding rows: key -1), as gathered fields."""
        rows = tf.concat([flat, tf.zeros([size, self.embedding_dim], flat.dtype)], axis=0)
        top, picks = tf.math.top_k(tf.concat([keys, -tf.ones([size], tf.float64)], axis=0), k=size)
        # Keys travel in two exact float32 halves (the all-reduce is float32).
        high = tf.floor(top / 65536.0)
        return {"rows": tf.gather(rows, picks), "key_high": high, "key_low": top - high * 65536.0}

    def _global_draw(self, gathered, size, distinct=False):
        """The `size` rows of largest key over all replicas ([size, D], sorted by key) and the
        number of real rows among them: a uniform draw without replacement from the global batch.
        `distinct`: a row equal to one drawn before it (`_same`) is dropped, and the rows kept
        come first, in key order."""
        keys = tf.cast(gathered["key_high"], tf.float64) * 65536.0 + tf.cast(gathered["key_low"], tf.float64)
        top, picks = tf.math.top_k(tf.reshape(keys, [-1]), k=size)
        rows = tf.gather(tf.reshape(gathered["rows"], [-1, self.embedding_dim]), picks)
        real = top >= 0.0
        if distinct:
            earlier = tf.range(size)[:, None] > tf.range(size)[None, :]  # [j, i]: i drawn before j
            exact = tf.cast(rows, tf.float64)  # (float64: no cancellation in the distances' expansion)
            norms = tf.reduce_sum(tf.square(exact), axis=-1)
            gaps = norms[:, None] + norms[None, :] - 2.0 * tf.matmul(exact, exact, transpose_b=True)
            same = gaps <= self.SAME * norms[:, None]
            repeat = tf.reduce_any(earlier & real[None, :] & same, axis=1)
            real = tf.logical_and(real, tf.logical_not(repeat))
            rows = tf.gather(rows, tf.argsort(tf.cast(tf.logical_not(real), tf.int32), stable=True))
        return rows, tf.reduce_sum(tf.cast(real, tf.int32))

    # Two vectors are the same value for a restart when their distance is within 1e-3 of the first
    # one's norm (squared: 1e-6). A batch repeats a value wherever the encoder sees the same input
    # (an empty background); not bit equality, as float rounding may change with the batch's split.
    SAME = 1e-6

    def _same(self, a, b):
        """Whether rows `a` and `b` [N, D] are the same value for a restart (see `SAME`)."""
        return tf.reduce_sum(tf.square(a - b), axis=-1) <= self.SAME * tf.reduce_sum(tf.square(a), axis=-1)

    # Restart candidates drawn per step, at most. Each is tested against those drawn before it (a
    # float64 [n, n] matrix: 2 GiB and 17 GFLOP at n = 16,384, every step), so a larger codebook
    # restarts its dead codes this many a step, lowest-numbered first (the others are restarted in
    # the steps after: a restarted code is not judged again during its grace period).
    MAX_RESTART_CANDIDATES = 2048

    @property
    def restart_sample_size(self) -> int:
        """Restart candidates drawn per step: K, or `MAX_RESTART_CANDIDATES` if that is fewer."""
        return min(self.num_embeddings, self.MAX_RESTART_CANDIDATES)

    @property
    def kmeans_sample_size(self) -> int:
        """Rows of the first global batch the k-means init runs on (at most): 8 per code. Under
        `tf.distribute` each step's all-reduce carries this many rows per replica."""
        return 8 * self.num_embeddings

    def _kmeans(self, sample, num_valid):
        """Lloyd iterations on the first `num_valid` rows of `sample` (which starts with distinct
        rows in random order) -> (centroids [K,D], their cluster sizes [K] in the sample). Codes
        that get no row keep their current codebook vector."""
        k = self.num_embeddings
        valid = tf.range(tf.shape(sample)[0]) < num_valid
        seeded = tf.range(k) < num_valid
        centroids = tf.where(seeded[:, None], sample[:k], self._codebook)

        def assign_and_count(centroids):
            assign = nearest_rows(sample, centroids, num_valid)  # (K >= 16,384: padding rows skipped)
            assign = tf.where(valid, assign, k)  # padding rows go to a discarded segment
            counts = tf.math.unsorted_segment_sum(tf.cast(valid, tf.float32), assign, k + 1)[:k]
            return assign, counts

        for _ in range(self.kmeans_iterations):
            assign, counts = assign_and_count(centroids)
            sums = tf.math.unsorted_segment_sum(sample, assign, k + 1)[:k]
            centroids = tf.where(counts[:, None] > 0, sums / tf.maximum(counts, 1.0)[:, None], centroids)
        # The sizes of the clusters of the centroids returned (the rows each one is nearest to).
        return centroids, assign_and_count(centroids)[1]

    def _set_codes(self, mask, vectors, sizes):
        """Replaces the codebook rows where `mask` [K] is True with `vectors` [K, D]; `sizes` [K]
        is how many vectors per step each new row stands for (used by the EMA codebook)."""
        self._codebook.assign(tf.where(mask[:, None], vectors, self._codebook))

    def _update_state(self, flat, indices_flat, counts, num_vectors):
        """Training-time state updates; returns the code counts of the global batch.

        Under `tf.distribute` the result equals that of one replica given the whole global
        batch: statistics are all-reduced, and the rows drawn for restarts and k-means are keyed
        by their index in the global batch."""
        # Every write is an unconditional masked assign, and the all-reduces sit outside tf.cond:
        # under MirroredStrategy neither may be conditional.
        summed = {"counts": counts, **self._extra_statistics(flat, indices_flat)}
        gathered = {}
        step = tf.convert_to_tensor(self.num_updates)  # read before this call increments it
        first_call = tf.equal(step, 0)
        restarts, kmeans = self.dead_code_threshold > 0, self.kmeans_init
        kmeans_size = self.kmeans_sample_size
        if restarts or kmeans:
            offset, total = distribute.replica_offset(num_vectors)
        if restarts:
            draw = self._restart_draw(flat, indices_flat, self._row_keys(offset + tf.range(num_vectors), step, 2))
            gathered.update({f"restart_{k}": v for k, v in draw.items()})
        distributed = distribute.replica_context() is not None

        def kmeans_draw():
            return self._local_draw(flat, self._row_keys(offset + tf.range(num_vectors), step, 1), kmeans_size)

        if kmeans and distributed:
            # Every step carries the sample (only the first uses it): a collective's shape must
            # not change from step to step inside a compiled training loop.
            gathered.update({f"kmeans_{k}": v for k, v in kmeans_draw().items()})
        summed, gathered = distribute.sync_across_replicas(summed, gathered)
        self.num_updates.assign_add(1)
        decay = self.usage_decay
        self.code_usage.assign(decay * self.code_usage + (1.0 - decay) * summed["counts"])
        self._ema_update(summed)
        reseeded = tf.zeros([self.num_embeddings], tf.bool)
        if kmeans:
            # k-means on a sample of the first global batch replaces the codebook after the
            # first step; usage and the EMA statistics start from the cluster sizes, scaled from
            # the sample to the global batch. On one replica the sample is drawn only then.
            def install_kmeans():
                if distributed:
                    draw = {k[len("kmeans_") :]: v for k, v in gathered.items() if k.startswith("kmeans_")}
                else:
                    draw = {k: v[tf.newaxis] for k, v in kmeans_draw().items()}
                sample, num_valid = self._global_draw(draw, kmeans_size)
                centroids, sample_counts = self._kmeans(sample, num_valid)
                scale = tf.cast(total, tf.float32) / tf.maximum(tf.cast(num_valid, tf.float32), 1.0)
                return centroids, sample_counts * scale

            install = tf.logical_and(first_call, total > 0)
            centroids, sizes = tf.cond(
                install,
                install_kmeans,
                lambda: (tf.convert_to_tensor(self._codebook), tf.zeros([self.num_embeddings])),
            )
            reseeded = tf.fill([self.num_embeddings], install)
            self._set_codes(reseeded, centroids, sizes)
            self.code_usage.assign(tf.where(install, (1.0 - decay) * sizes, self.code_usage))
        if restarts:
            candidates, num_candidates = self._global_draw(
                {k[len("restart_") :]: v for k, v in gathered.items() if k.startswith("restart_")},
                self.restart_sample_size,
                distinct=True,
            )
            reseeded = tf.logical_or(reseeded, self._restart_dead_codes(candidates, num_candidates))
        self.reseeded.assign(tf.cast(reseeded, tf.float32))
        return summed["counts"]

    def _extra_statistics(self, flat, indices_flat) -> dict:
        """Per-step statistics (summed over replicas) a subclass needs in `_ema_update`."""
        return {}

    def _ema_update(self, summed):
        pass

    def _restart_draw(self, flat, indices_flat, keys):
        """This replica's restart candidates (a `_local_draw` of `restart_sample_size` rows by
        `keys`), leaving out the rows their code already holds (`_same`: a restart there would only
        duplicate that code).
        Drawn only when some code may be judged dead at the end of this step (else no row is
        drawn): an exact test, as a code's usage after the step is at least `usage_decay` times
        its usage now."""
        size = self.restart_sample_size

        def draw():
            held = self._same(flat, tf.gather(self.codebook, indices_flat))
            return self._local_draw(flat, tf.where(held, -tf.ones_like(keys), keys), size)

        def nothing():
            return self._local_draw(flat[:0], tf.zeros([0], tf.float64), size)

        bias_correction, judged = self._judgement(tf.convert_to_tensor(self.num_updates) + 1)
        lowest = self.usage_decay * self.code_usage / bias_correction
        possible = tf.reduce_any(tf.logical_and(judged, lowest < self.dead_code_threshold))
        return tf.cond(possible, draw, nothing)

    def _judgement(self, step):
        """At `step` (`num_updates` after its increment): the usage EMA's bias correction, and
        which codes may be judged dead (never restarted, or past their grace period)."""
        bias_correction = 1.0 - tf.pow(self.usage_decay, tf.cast(step, tf.float32))
        return bias_correction, tf.logical_or(self.restarted_at < 0, step - self.restarted_at >= self.grace_steps)

    def _restart_dead_codes(self, candidates, num_candidates):
        """candidates [`restart_sample_size`, D]: distinct values of rows of the global batch in
        random order, the first `num_candidates` real. Returns the bool [K] mask of the codes
        restarted."""
        step = self.num_updates
        bias_correction, judged = self._judgement(step)
        dead = tf.logical_and(self.code_usage / bias_correction < self.dead_code_threshold, judged)
        rank = tf.cumsum(tf.cast(dead, tf.int32)) - 1  # the i-th dead code takes the i-th candidate
        restart = tf.logical_and(dead, rank < num_candidates)
        vectors = tf.gather(candidates, tf.clip_by_value(rank, 0, self.restart_sample_size - 1))
        self._set_codes(restart, vectors, tf.fill([self.num_embeddings], max(1.0, self.dead_code_threshold)))
        self.code_usage.assign(tf.where(restart, self.dead_code_threshold * bias_correction, self.code_usage))
        self.restarted_at.assign(tf.where(restart, step, self.restarted_at))
        self.num_restarts.assign_add(tf.reduce_sum(tf.cast(restart, tf.int64)))
        return restart
