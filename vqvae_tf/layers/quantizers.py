"""Vector-quantisation layers of VQ-VAE.

"Neural Discrete Representation Learning", van den Oord, Vinyals, Kavukcuoglu (2017),
arXiv:1711.00937: section 3.1 (nearest-neighbour quantisation, eq. 1-2), eq. 3 (the loss:
reconstruction + ||sg[z_e] - e||^2 + beta ||z_e - sg[e]||^2) and appendix A.1 (EMA codebook).

Beyond the paper: dead-code restart, k-means initialisation from data, cross-replica
statistics under `tf.distribute`, float32 distances under mixed precision.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from vqvae_tf.layers import SERIALIZATION_PACKAGE
from vqvae_tf.utils import checks


def _replica_context():
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return None
    return ctx


def _sync(summed: dict, from_first: dict | None = None) -> tuple[dict, dict]:
    """Sums `summed` over replicas and broadcasts the first replica's `from_first`, in ONE
    all-reduce. Separate collectives in one step may run in different orders on different
    replicas (a shape-mismatch abort), so each phase packs its tensors together.
    Identity outside a multi-replica step."""
    from_first = from_first or {}
    ctx = _replica_context()
    if ctx is None:
        return dict(summed), dict(from_first)
    is_first = tf.cast(tf.equal(ctx.replica_id_in_sync_group, 0), tf.float32)
    items = [(k, tf.cast(v, tf.float32), False) for k, v in summed.items()]
    items += [(k, tf.cast(v, tf.float32) * is_first, True) for k, v in from_first.items()]
    packed = ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.concat([tf.reshape(v, [-1]) for _, v, _ in items], 0))
    sizes = [tf.size(v) for _, v, _ in items]
    parts = tf.split(packed, tf.stack(sizes), num=len(items))
    out_sum, out_first = {}, {}
    for (key, value, first), part in zip(items, parts):
        restored = tf.cast(tf.reshape(part, tf.shape(value)), (from_first if first else summed)[key].dtype)
        (out_first if first else out_sum)[key] = restored
    return out_sum, out_first


def _squared_distances(flat, codebook):
    """||z||^2 - 2 z.e + ||e||^2, float32 [N, K]."""
    return (
        tf.reduce_sum(tf.square(flat), axis=1, keepdims=True)
        - 2.0 * tf.matmul(flat, codebook, transpose_b=True)
        + tf.reduce_sum(tf.square(codebook), axis=1)[tf.newaxis, :]
    )


def nearest_codes(z, codebook):
    """Index of the nearest codebook row for each vector: z float [..., D] -> int32 [...]."""
    flat = tf.reshape(tf.cast(z, tf.float32), [-1, tf.shape(codebook)[1]])
    indices = tf.argmin(_squared_distances(flat, codebook), axis=1, output_type=tf.int32)
    return tf.reshape(indices, tf.shape(z)[:-1])


def perplexity_from_counts(counts):
    """exp(entropy) of the code distribution given by `counts` [K] (0 counts allowed)."""
    counts = tf.cast(counts, tf.float32)
    probs = tf.math.divide_no_nan(counts, tf.reduce_sum(counts))
    return tf.exp(-tf.reduce_sum(tf.math.xlogy(probs, probs)))


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class VectorQuantizer(keras.layers.Layer):
    """Nearest-neighbour vector quantiser with a gradient-trained codebook (paper eq. 1-3).

    Args:
      num_embeddings: K, the number of codebook vectors.
      embedding_dim: D, the size of each vector; the last dimension of the input.
      commitment_cost: beta in eq. 3 (0.25 in the paper).
      dead_code_threshold: 0 disables restarts. Otherwise, during training a code whose
        (bias-corrected) EMA of assignments per step falls below this value is re-seeded with an
        encoder output drawn from the current batch.
      usage_decay: decay of that usage EMA.
      kmeans_init: if True, the first training call runs `kmeans_iterations` Lloyd iterations on
        its batch of encoder outputs (the first replica's) and, at the end of that call, makes
        the centroids the codebook.
      kmeans_iterations: Lloyd iterations for `kmeans_init`.
      seed: integer seed of the random draws (restarts, k-means seeding).
      **kwargs: passed to `keras.layers.Layer` (name, dtype policy, ...).

    Call args:
      inputs: float tensor ``[..., embedding_dim]`` (z_e).
      training: whether to update state (usage statistics, restarts, k-means init).

    Returns a dict:
      ``quantized``: same shape as the input, in the layer's compute dtype; forward value is the
        nearest codebook vector, gradient w.r.t. the input is the identity (straight-through).
      ``indices``: int32 ``inputs.shape[:-1]``.
      ``codebook_loss``: float32 scalar, mean ||sg[z_e] - e||^2 (reaches the codebook only).
      ``commitment_loss``: float32 scalar, beta * mean ||z_e - sg[e]||^2 (reaches z_e only).
      ``perplexity``: float32 scalar, exp(entropy) of the code usage in this batch.

    Distances are computed in float32 even under a mixed-precision policy.

    Example:
    >>> vq = VectorQuantizer(num_embeddings=16, embedding_dim=4)
    >>> out = vq(tf.random.normal([2, 3, 3, 4]), training=True)
    >>> out["indices"].shape
    TensorShape([2, 3, 3])
    """

    _codebook_trainable = True

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        commitment_cost: float = 0.25,
        dead_code_threshold: float = 0.0,
        usage_decay: float = 0.99,
        kmeans_init: bool = False,
        kmeans_iterations: int = 10,
        seed: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        checks.positive_int("num_embeddings", num_embeddings)
        checks.positive_int("embedding_dim", embedding_dim)
        if not commitment_cost >= 0:
            raise ValueError(f"commitment_cost must be >= 0, got {commitment_cost}.")
        if not dead_code_threshold >= 0:
            raise ValueError(f"dead_code_threshold must be >= 0, got {dead_code_threshold}.")
        if not 0.0 <= usage_decay < 1.0:
            raise ValueError(f"usage_decay must be in [0, 1), got {usage_decay}.")
        checks.positive_int("kmeans_iterations", kmeans_iterations)
        self.num_embeddings = int(num_embeddings)
        self.embedding_dim = int(embedding_dim)
        self.commitment_cost = float(commitment_cost)
        self.dead_code_threshold = float(dead_code_threshold)
        self.usage_decay = float(usage_decay)
        self.kmeans_init = bool(kmeans_init)
        self.kmeans_iterations = int(kmeans_iterations)
        self.seed = int(seed)

    # ---------------------------------------------------------------- state

    def build(self, input_shape):
        last = input_shape[-1] if input_shape else None
        if last is not None and last != self.embedding_dim:
            raise ValueError(
                f"{self.name}: the last dimension of the input must be embedding_dim="
                f"{self.embedding_dim}, got input shape {tuple(input_shape)}."
            )
        # Sonnet's default: uniform variance scaling. Every value assigned to the state below is
        # identical on all replicas (all-reduced or broadcast first), hence "only_first_replica";
        # the optimizer updates the (gradient-trained) codebook in cross-replica context.
        self._codebook = self.add_weight(
            name="codebook",
            shape=(self.num_embeddings, self.embedding_dim),
            initializer=keras.initializers.VarianceScaling(distribution="uniform", seed=self.seed),
            trainable=self._codebook_trainable,
            autocast=False,
            aggregation="only_first_replica",
        )
        self.code_usage = self.add_weight(
            name="code_usage",
            shape=(self.num_embeddings,),
            initializer="zeros",
            trainable=False,
            autocast=False,
            aggregation="only_first_replica",
        )
        self.num_updates = self.add_weight(
            name="num_updates",
            shape=(),
            initializer="zeros",
            dtype="int64",
            trainable=False,
            autocast=False,
            aggregation="only_first_replica",
        )
        self._build_extra_state()

    def _build_extra_state(self):
        pass

    @property
    def codebook(self):
        """The codebook, float32 ``[num_embeddings, embedding_dim]``."""
        return tf.convert_to_tensor(self._codebook)

    # ---------------------------------------------------------------- forward

    def call(self, inputs, training=False):
        x = tf.convert_to_tensor(inputs)
        if not x.dtype.is_floating:
            raise TypeError(f"{self.name}: inputs must be a float tensor, got dtype {x.dtype.name}.")
        dims = tf.shape(x)
        if x.shape[-1] is None:  # only known at run time
            x = checks.require(
                x,
                tf.equal(dims[-1], self.embedding_dim),
                f"{self.name}: last dimension of the input must be embedding_dim={self.embedding_dim}, got",
                dims[-1],
            )
        flat = tf.reshape(tf.cast(x, tf.float32), [-1, self.embedding_dim])
        num_vectors = tf.shape(flat)[0]

        codebook = tf.convert_to_tensor(self._codebook)
        indices_flat = tf.argmin(_squared_distances(flat, codebook), axis=1, output_type=tf.int32)
        quantized_flat = tf.gather(codebook, indices_flat)
        counts = tf.math.unsorted_segment_sum(tf.ones_like(indices_flat, tf.float32), indices_flat, self.num_embeddings)

        num_elements = tf.cast(num_vectors * self.embedding_dim, tf.float32)
        commitment_loss = self.commitment_cost * tf.math.divide_no_nan(
            tf.reduce_sum(tf.square(flat - tf.stop_gradient(quantized_flat))), num_elements
        )
        codebook_loss = self._codebook_loss(flat, quantized_flat, num_elements)
        # Straight-through estimator (section 3.1): forward = e, backward = identity to z_e.
        quantized_st = flat + tf.stop_gradient(quantized_flat - flat)

        if training:
            self._update_state(flat, indices_flat, counts, num_vectors)

        return {
            "quantized": tf.cast(tf.reshape(quantized_st, dims), self.compute_dtype),
            "indices": tf.reshape(indices_flat, dims[:-1]),
            "codebook_loss": codebook_loss,
            "commitment_loss": commitment_loss,
            "perplexity": perplexity_from_counts(counts),
        }

    def _codebook_loss(self, flat, quantized_flat, num_elements):
        return tf.math.divide_no_nan(tf.reduce_sum(tf.square(tf.stop_gradient(flat) - quantized_flat)), num_elements)

    def compute_output_spec(self, inputs, training=False):
        shape = tuple(inputs.shape)
        scalar = keras.KerasTensor((), dtype="float32")
        return {
            "quantized": keras.KerasTensor(shape, dtype=self.compute_dtype),
            "indices": keras.KerasTensor(shape[:-1], dtype="int32"),
            "codebook_loss": scalar,
            "commitment_loss": scalar,
            "perplexity": scalar,
        }

    def lookup(self, indices):
        """Codebook vectors for `indices` (int ``[...]`` in ``[0, num_embeddings)``) ->
        float32 ``[..., embedding_dim]``. Out-of-range indices raise InvalidArgumentError (a GPU
        gather would silently return zeros)."""
        indices = tf.convert_to_tensor(indices)
        if not indices.dtype.is_integer:
            raise TypeError(f"{self.name}.lookup: indices must be integers, got dtype {indices.dtype.name}.")
        if not self.built:
            self.build((None, self.embedding_dim))
        indices = checks.in_range(tf.cast(indices, tf.int32), 0, self.num_embeddings, "codes")
        return tf.gather(tf.convert_to_tensor(self._codebook), indices)

    # ---------------------------------------------------------------- training-time state

    def _random_rows(self, flat, num_vectors, salt):
        """`num_embeddings` rows of `flat` drawn with replacement (zeros for an empty batch)."""
        seed = tf.stack([tf.cast(self.seed, tf.int64), self.num_updates * 4 + salt])
        picks = tf.random.stateless_uniform(
            [self.num_embeddings], seed=seed, minval=0, maxval=tf.maximum(num_vectors, 1), dtype=tf.int32
        )
        padded = tf.concat([flat, tf.zeros([1, self.embedding_dim], flat.dtype)], axis=0)
        return tf.gather(padded, picks)

    def _local_kmeans(self, flat, num_vectors):
        """Lloyd iterations on this replica's batch -> (centroids [K,D], cluster sizes [K])."""
        centroids = self._random_rows(flat, num_vectors, salt=1)
        ones = tf.ones([num_vectors], tf.float32)
        counts = tf.zeros([self.num_embeddings])
        for _ in range(self.kmeans_iterations):
            assign = tf.argmin(_squared_distances(flat, centroids), axis=1, output_type=tf.int32)
            sums = tf.math.unsorted_segment_sum(flat, assign, self.num_embeddings)
            counts = tf.math.unsorted_segment_sum(ones, assign, self.num_embeddings)
            centroids = tf.where(counts[:, None] > 0, sums / tf.maximum(counts, 1.0)[:, None], centroids)
        return centroids, counts

    def _set_codes(self, mask, vectors):
        """Replaces the codebook rows where `mask` [K] is True with `vectors` [K, D]."""
        self._codebook.assign(tf.where(mask[:, None], vectors, self._codebook))

    def _update_state(self, flat, indices_flat, counts, num_vectors):
        # Everything that crosses replicas travels in ONE packed all-reduce per step (see _sync),
        # and every write is an unconditional masked assign: under MirroredStrategy neither
        # collectives nor writes to mirrored variables may sit inside tf.cond.
        summed = {"counts": counts, "num_vectors": num_vectors, **self._extra_statistics(flat, indices_flat)}
        first = {}
        if self.dead_code_threshold > 0:
            first["candidates"] = self._random_rows(flat, num_vectors, salt=2)
        first_call = tf.equal(self.num_updates, 0)
        if self.kmeans_init:
            first["centroids"], first["kmeans_counts"] = tf.cond(
                tf.logical_and(first_call, num_vectors > 0),
                lambda: self._local_kmeans(flat, num_vectors),
                lambda: (tf.convert_to_tensor(self._codebook), tf.zeros([self.num_embeddings])),
            )
        summed, first = _sync(summed, first)
        self.num_updates.assign_add(1)
        decay = self.usage_decay
        self.code_usage.assign(decay * self.code_usage + (1.0 - decay) * summed["counts"])
        self._ema_update(summed)
        if self.kmeans_init:
            # k-means on the first batch (of the first replica) replaces the codebook after the
            # first step; usage restarts from the k-means cluster sizes, scaled to all replicas.
            install = tf.logical_and(first_call, summed["num_vectors"] > 0)
            self._set_codes(tf.fill([self.num_embeddings], install), first["centroids"])
            replicas = tf.cast(summed["num_vectors"], tf.float32) / tf.maximum(tf.cast(num_vectors, tf.float32), 1.0)
            self.code_usage.assign(
                tf.where(install, (1.0 - decay) * first["kmeans_counts"] * replicas, self.code_usage)
            )
        if self.dead_code_threshold > 0:
            self._restart_dead_codes(first["candidates"], summed["num_vectors"])

    def _extra_statistics(self, flat, indices_flat) -> dict:
        """Per-step statistics (summed over replicas) a subclass needs in `_ema_update`."""
        return {}

    def _ema_update(self, summed):
        pass

    def _restart_dead_codes(self, candidates, total_vectors):
        bias_correction = 1.0 - tf.pow(self.usage_decay, tf.cast(self.num_updates, tf.float32))
        dead = self.code_usage / bias_correction < self.dead_code_threshold
        restart = tf.logical_and(dead, total_vectors > 0)
        self._set_codes(restart, candidates)
        self.code_usage.assign(tf.where(restart, self.dead_code_threshold * bias_correction, self.code_usage))

    def get_config(self):
        config = super().get_config()
        config.update(
            num_embeddings=self.num_embeddings,
            embedding_dim=self.embedding_dim,
            commitment_cost=self.commitment_cost,
            dead_code_threshold=self.dead_code_threshold,
            usage_decay=self.usage_decay,
            kmeans_init=self.kmeans_init,
            kmeans_iterations=self.kmeans_iterations,
            seed=self.seed,
        )
        return config


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class VectorQuantizerEMA(VectorQuantizer):
    """Vector quantiser whose codebook follows exponential moving averages (paper appendix A.1).

    With n_i the number of encoder outputs assigned to code i in a step and s_i their sum:
    ``N_i <- decay N_i + (1 - decay) n_i``, ``m_i <- decay m_i + (1 - decay) s_i``,
    ``e_i = m_i / N~_i`` with Laplace smoothing ``N~_i = (N_i + eps) / (sum N + K eps) * sum N``.
    State starts at ``N_i = 1, m_i = e_i`` so the codebook is unchanged until data arrives.
    Counts and sums are summed over replicas under `tf.distribute`.

    Args:
      num_embeddings, embedding_dim, commitment_cost: as in `VectorQuantizer`.
      decay: EMA decay (0.99 in the paper).
      epsilon: Laplace smoothing constant.
      **kwargs: the remaining `VectorQuantizer` arguments (dead-code restart, k-means init, seed)
        and Keras layer arguments.

    The codebook variables are non-trainable; ``codebook_loss`` is 0; the state changes only when
    called with ``training=True``.
    """

    _codebook_trainable = False

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        commitment_cost: float = 0.25,
        decay: float = 0.99,
        epsilon: float = 1e-5,
        **kwargs,
    ):
        kwargs.setdefault("usage_decay", decay)
        super().__init__(num_embeddings, embedding_dim, commitment_cost, **kwargs)
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}.")
        if not epsilon > 0:
            raise ValueError(f"epsilon must be > 0, got {epsilon}.")
        self.decay = float(decay)
        self.epsilon = float(epsilon)

    def _build_extra_state(self):
        self.ema_cluster_size = self.add_weight(
            name="ema_cluster_size",
            shape=(self.num_embeddings,),
            initializer="ones",
            trainable=False,
            autocast=False,
            aggregation="only_first_replica",
        )
        self.ema_dw = self.add_weight(
            name="ema_dw",
            shape=(self.num_embeddings, self.embedding_dim),
            initializer="zeros",
            trainable=False,
            autocast=False,
            aggregation="only_first_replica",
        )
        self.ema_dw.assign(self._codebook)

    def _codebook_loss(self, flat, quantized_flat, num_elements):
        return tf.zeros([], tf.float32)

    def _extra_statistics(self, flat, indices_flat) -> dict:
        return {"sums": tf.math.unsorted_segment_sum(flat, indices_flat, self.num_embeddings)}

    def _ema_update(self, summed):
        d = self.decay
        cluster_size = d * self.ema_cluster_size + (1.0 - d) * summed["counts"]
        dw = d * self.ema_dw + (1.0 - d) * summed["sums"]
        self.ema_cluster_size.assign(cluster_size)
        self.ema_dw.assign(dw)
        self._codebook.assign(dw / self._smoothed_cluster_size(cluster_size)[:, None])

    def _smoothed_cluster_size(self, cluster_size):
        n = tf.reduce_sum(cluster_size)
        k_eps = self.num_embeddings * self.epsilon
        return (cluster_size + self.epsilon) / (n + k_eps) * n

    def _set_codes(self, mask, vectors):
        # Keep the EMA state consistent with the new rows: N_i = 1 (or the restart threshold),
        # m_i = e_i * N~_i, so that the next update starts from the new vector.
        restart_size = max(1.0, self.dead_code_threshold)
        cluster_size = tf.where(mask, restart_size, self.ema_cluster_size)
        self.ema_cluster_size.assign(cluster_size)
        self.ema_dw.assign(
            tf.where(mask[:, None], vectors * self._smoothed_cluster_size(cluster_size)[:, None], self.ema_dw)
        )
        self._codebook.assign(self.ema_dw / self._smoothed_cluster_size(cluster_size)[:, None])

    def get_config(self):
        config = super().get_config()
        config.update(decay=self.decay, epsilon=self.epsilon)
        return config


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class CodebookUsage(keras.metrics.Metric):
    """Code counts accumulated over many batches (a whole dataset), summed across replicas.

    `update_state(indices)` takes int codes of any shape; `result()` returns a dict with
    ``perplexity`` (exp entropy of the accumulated usage) and ``codebook_usage`` (fraction of
    the K codes used at least once). `counts()` gives the raw float32 ``[K]`` counts.
    """

    def __init__(self, num_embeddings: int, name: str = "codebook_usage", **kwargs):
        super().__init__(name=name, **kwargs)
        checks.positive_int("num_embeddings", num_embeddings)
        self.num_embeddings = int(num_embeddings)
        self._counts = self.add_variable(
            shape=(self.num_embeddings,), initializer="zeros", dtype="float32", name="counts"
        )

    def update_state(self, indices, sample_weight=None):
        flat = tf.reshape(tf.cast(indices, tf.int32), [-1])
        self._counts.assign_add(tf.math.unsorted_segment_sum(tf.ones_like(flat, tf.float32), flat, self.num_embeddings))

    def counts(self):
        return tf.convert_to_tensor(self._counts)

    def result(self):
        counts = self.counts()
        return {
            "perplexity": perplexity_from_counts(counts),
            "codebook_usage": tf.reduce_mean(tf.cast(counts > 0, tf.float32)),
        }

    def get_config(self):
        return {"num_embeddings": self.num_embeddings, "name": self.name, "dtype": self.dtype}
