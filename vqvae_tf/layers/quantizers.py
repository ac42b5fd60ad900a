"""Vector-quantisation layers of VQ-VAE.

"Neural Discrete Representation Learning", van den Oord, Vinyals, Kavukcuoglu (2017),
arXiv:1711.00937: section 3.1 (nearest-neighbour quantisation, eq. 1-2), eq. 3 (the loss:
reconstruction + ||sg[z_e] - e||^2 + beta ||z_e - sg[e]||^2) and appendix A.1 (EMA codebook).

Beyond the paper: dead-code restart, k-means initialisation from data, cross-replica
statistics under `tf.distribute`, float32 distances under mixed precision, l2-normalised
(cosine) codebooks (Yu et al. 2021, "Vector-quantized Image Modeling with Improved VQGAN",
arXiv:2110.04627, section 3.2) and the rotation trick as the gradient (Fifty et al. 2024,
"Restructuring Vector Quantization with the Rotation Trick", arXiv:2410.06424).

Every quantizer of the zoo (these, `fsq.FiniteScalarQuantizer`, `residual_vq.ResidualVectorQuantizer`)
keeps one contract, which `VQVAE`, the codes export and the exporters rely on:

- ``call(z, training)`` -> dict of ``quantized``, ``indices``, ``codebook_loss``,
  ``commitment_loss``, ``perplexity``;
- ``num_embeddings`` (index range per code), ``embedding_dim``, ``codes_per_position`` (1, or the
  depth of a residual quantizer, whose ``indices`` have a last axis of that size);
- ``lookup(indices, codebook=None, check=True)`` and ``indices_of(z, codebook=None)``: indices <->
  vectors, on the layer's variables or on a constant copy of ``codebook`` (for graphs that must not
  read variables, e.g. TFLite, which also cannot run the range check: ``check=False``);
- ``num_restarts``, ``reinitialize()`` and ``reseedable_codebooks()`` (gradient-trained codebook
  variables with their ``reseeded`` masks) for the training step.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from vqvae_tf.layers import SERIALIZATION_PACKAGE
from vqvae_tf.utils import checks


def _replica_context():
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
    of 1). Values travel as float32: integers must stay below 2**24."""
    gathered = gathered or {}
    ctx = _replica_context()
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


def _replica_offset(num_vectors):
    """(Rows of the global batch before this replica's, rows of the global batch). MirroredStrategy
    splits a global batch into consecutive chunks in replica order, so offset + i is row i's
    index in the global batch. A small all-reduce of its own, which every later one depends on."""
    ctx = _replica_context()
    if ctx is None:
        return tf.zeros([], tf.int32), num_vectors
    slot = _own_slot(ctx)
    per_replica = tf.cast(ctx.all_reduce(tf.distribute.ReduceOp.SUM, slot * tf.cast(num_vectors, tf.float32)), tf.int32)
    before = tf.range(ctx.num_replicas_in_sync) < ctx.replica_id_in_sync_group
    return tf.reduce_sum(tf.where(before, per_replica, 0)), tf.reduce_sum(per_replica)


def _mix32(x):
    """A bijection of uint32 with good avalanche (the "lowbias32" integer hash)."""
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(16, tf.uint32)))
    x = x * tf.constant(0x7FEB352D, tf.uint32)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(15, tf.uint32)))
    x = x * tf.constant(0x846CA68B, tf.uint32)
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(16, tf.uint32)))


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


DISTANCES = ("euclidean", "cosine")
GRADIENTS = ("straight_through", "rotation")


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


def perplexity_from_counts(counts):
    """exp(entropy) of the code distribution given by `counts` [K] (0 counts allowed)."""
    counts = tf.cast(counts, tf.float32)
    probs = tf.math.divide_no_nan(counts, tf.reduce_sum(counts))
    return tf.exp(-tf.reduce_sum(tf.math.xlogy(probs, probs)))


def output_spec(layer, inputs):
    """The symbolic output dict of a quantizer `layer` (the contract above) for `inputs`."""
    shape = tuple(inputs.shape)
    scalar = keras.KerasTensor((), dtype="float32")
    depth = () if layer.codes_per_position == 1 else (layer.codes_per_position,)
    return {
        "quantized": keras.KerasTensor(shape, dtype=layer.compute_dtype),
        "indices": keras.KerasTensor(shape[:-1] + depth, dtype="int32"),
        "codebook_loss": scalar,
        "commitment_loss": scalar,
        "perplexity": scalar,
    }


def check_indices(layer, indices, check: bool = True):
    """Integer `indices` of `layer` as int32, checked in graph to be in [0, num_embeddings) unless
    not `check` (TypeError / InvalidArgument naming the problem otherwise)."""
    indices = tf.convert_to_tensor(indices)
    if not indices.dtype.is_integer:
        raise TypeError(f"{layer.name}.lookup: indices must be integers, got dtype {indices.dtype.name}.")
    indices = tf.cast(indices, tf.int32)
    return checks.in_range(indices, 0, layer.num_embeddings, "codes") if check else indices


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class VectorQuantizer(keras.layers.Layer):
    """Nearest-neighbour vector quantiser with a gradient-trained codebook (paper eq. 1-3).

    Args:
      num_embeddings: K, the number of codebook vectors.
      embedding_dim: D, the size of each vector; the last dimension of the input.
      commitment_cost: beta in eq. 3 (0.25 in the paper).
      dead_code_threshold: 0 disables restarts. Otherwise, during training a code whose
        (bias-corrected) EMA of assignments per step falls below this value is re-seeded with an
        encoder output of the current (global) batch. The replacements are distinct rows drawn
        uniformly without replacement; when the batch has fewer rows than there are dead codes,
        only that many codes (the lowest-numbered dead ones) are restarted.
      usage_decay: decay of that usage EMA.
      restart_grace_steps: steps after a restart during which that code cannot be judged dead
        again (its usage EMA needs time to reflect its new position). None: the usage EMA's time
        constant, ``ceil(1 / (1 - usage_decay))`` (100 steps at 0.99).
      kmeans_init: if True, the first training call runs `kmeans_iterations` Lloyd iterations on
        a sample of up to `kmeans_sample_size` rows of its (global) batch of encoder outputs and,
        at the end of that call, makes the centroids the codebook.
      kmeans_iterations: Lloyd iterations for `kmeans_init`.
      seed: integer seed of the random draws (restarts, k-means seeding).
      distance: "euclidean", or "cosine": inputs and codes are l2-normalised before the nearest
        code is chosen, so codes compete on direction only and ``quantized`` is a unit vector
        (ViT-VQGAN's l2-normalised codebook; the EMA statistics and k-means then run on the
        normalised inputs).
      gradient: "straight_through" (the paper's: the decoder's gradient copied to z_e), or
        "rotation" (the rotation trick, `rotation_trick`).
      **kwargs: passed to `keras.layers.Layer` (name, dtype policy, ...).

    Call args:
      inputs: float tensor ``[..., embedding_dim]`` (z_e).
      training: whether to update state (usage statistics, restarts, k-means init).

    Returns a dict:
      ``quantized``: same shape as the input, in the layer's compute dtype; forward value is the
        nearest codebook vector, gradient w.r.t. the input is the identity (straight-through) or
        the rotation trick's (`gradient`).
      ``indices``: int32 ``inputs.shape[:-1]``.
      ``codebook_loss``: float32 scalar, mean ||sg[z_e] - e||^2 (reaches the codebook only).
      ``commitment_loss``: float32 scalar, beta * mean ||z_e - sg[e]||^2 (reaches z_e only).
      ``perplexity``: float32 scalar, exp(entropy) of the code usage in this batch (in training
        under `tf.distribute`: of the global batch, from the all-reduced counts).

    Distances are computed in float32 even under a mixed-precision policy. After each training
    call, ``reseeded`` (float32 ``[K]``, 1 for a row replaced in that call by a restart or the
    k-means install) tells an optimizer which rows' moments are stale (`VQVAE.train_step` resets
    them), and ``num_restarts`` counts the restarts so far.

    Example:
    >>> vq = VectorQuantizer(num_embeddings=16, embedding_dim=4)
    >>> out = vq(tf.random.normal([2, 3, 3, 4]), training=True)
    >>> out["indices"].shape
    TensorShape([2, 3, 3])
    """

    _codebook_trainable = True
    codes_per_position = 1

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
        restart_grace_steps: int | None = None,
        distance: str = "euclidean",
        gradient: str = "straight_through",
        **kwargs,
    ):
        super().__init__(**kwargs)
        checks.positive_int("num_embeddings", num_embeddings)
        checks.one_of("distance", distance, DISTANCES)
        checks.one_of("gradient", gradient, GRADIENTS)
        checks.positive_int("embedding_dim", embedding_dim)
        if not commitment_cost >= 0:
            raise ValueError(f"commitment_cost must be >= 0, got {commitment_cost}.")
        if not dead_code_threshold >= 0:
            raise ValueError(f"dead_code_threshold must be >= 0, got {dead_code_threshold}.")
        if not 0.0 <= usage_decay < 1.0:
            raise ValueError(f"usage_decay must be in [0, 1), got {usage_decay}.")
        checks.positive_int("kmeans_iterations", kmeans_iterations)
        if restart_grace_steps is not None:
            checks.positive_int("restart_grace_steps", restart_grace_steps)
        self.num_embeddings = int(num_embeddings)
        self.embedding_dim = int(embedding_dim)
        self.commitment_cost = float(commitment_cost)
        self.dead_code_threshold = float(dead_code_threshold)
        self.usage_decay = float(usage_decay)
        self.kmeans_init = bool(kmeans_init)
        self.kmeans_iterations = int(kmeans_iterations)
        self.seed = int(seed)
        self.restart_grace_steps = None if restart_grace_steps is None else int(restart_grace_steps)
        self.distance = distance
        self.gradient = gradient

    @property
    def grace_steps(self) -> int:
        """The restart grace period in force (see `restart_grace_steps`)."""
        if self.restart_grace_steps is not None:
            return self.restart_grace_steps
        return max(1, math.ceil(1.0 / (1.0 - self.usage_decay) - 1e-9))

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
        self.code_usage = self._state("code_usage", (self.num_embeddings,), "float32")
        self.num_updates = self._state("num_updates", (), "int64")
        # Step (num_updates) of each code's last restart; -1: never restarted.
        self.restarted_at = self._state("restarted_at", (self.num_embeddings,), "int64", initializer=-1)
        self.reseeded = self._state("reseeded", (self.num_embeddings,), "float32")
        self.num_restarts = self._state("num_restarts", (), "int64")
        self._build_extra_state()

    def _state(self, name, shape, dtype, initializer=0):
        return self.add_weight(
            name=name,
            shape=shape,
            initializer=keras.initializers.Constant(initializer),
            dtype=dtype,
            trainable=False,
            autocast=False,
            aggregation="only_first_replica",
        )

    def _build_extra_state(self):
        pass

    def reinitialize(self) -> None:
        """Forgets what the codes were fitted to, keeping nothing but the layer's configuration:
        the next training call runs the k-means install on its batch (the new codebook and, for
        EMA, its statistics), and usage, restarts and their grace periods start afresh. For
        fine-tuning on other data (`train.train_vqvae --init_from=... --reinit_codebook`).

        Raises:
          ValueError: the layer was made without `kmeans_init`.
        """
        if not self.kmeans_init:
            raise ValueError(f"{self.name}: re-initialising the codebook needs kmeans_init=True.")
        self.num_updates.assign(0)
        self.code_usage.assign(tf.zeros_like(self.code_usage))
        self.restarted_at.assign(tf.fill(tf.shape(self.restarted_at), tf.constant(-1, tf.int64)))
        self.reseeded.assign(tf.zeros_like(self.reseeded))
        self.num_restarts.assign(0)

    @property
    def codebook(self):
        """The codebook as the layer uses it (l2-normalised rows with ``distance="cosine"``),
        float32 ``[num_embeddings, embedding_dim]``."""
        return self._effective(tf.convert_to_tensor(self._codebook))

    def _effective(self, vectors):
        """Vectors as the distance sees them: l2-normalised rows for the cosine distance."""
        if self.distance == "cosine":
            return tf.math.l2_normalize(vectors, axis=-1, epsilon=1e-12)
        return vectors

    def reseedable_codebooks(self) -> list:
        """[(codebook variable, reseeded variable)] for a gradient-trained codebook, else []:
        what `VQVAE.train_step` clears the stale optimizer state of after a restart."""
        return [(self._codebook, self.reseeded)] if self._codebook.trainable else []

    def indices_of(self, z, codebook=None):
        """Nearest codes of float z ``[..., D]`` -> int32 ``[...]`` without touching state;
        `codebook`: a constant copy of `self.codebook` to use instead of the variables."""
        codebook = self.codebook if codebook is None else codebook
        return nearest_codes(self._effective(tf.cast(z, tf.float32)), codebook)

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
        flat = self._effective(tf.reshape(tf.cast(x, tf.float32), [-1, self.embedding_dim]))
        num_vectors = tf.shape(flat)[0]

        codebook = self.codebook
        indices_flat = tf.argmin(_squared_distances(flat, codebook), axis=1, output_type=tf.int32)
        quantized_flat = tf.gather(codebook, indices_flat)
        counts = tf.math.unsorted_segment_sum(tf.ones_like(indices_flat, tf.float32), indices_flat, self.num_embeddings)

        num_elements = tf.cast(num_vectors * self.embedding_dim, tf.float32)
        commitment_loss = self.commitment_cost * tf.math.divide_no_nan(
            tf.reduce_sum(tf.square(flat - tf.stop_gradient(quantized_flat))), num_elements
        )
        codebook_loss = self._codebook_loss(flat, quantized_flat, num_elements)
        # Forward = e; backward: the identity to z_e (section 3.1) or the rotation trick.
        quantized_st = (rotation_trick if self.gradient == "rotation" else straight_through)(flat, quantized_flat)

        if training:
            counts = self._update_state(flat, indices_flat, counts, num_vectors)

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
        return output_spec(self, inputs)

    def lookup(self, indices, codebook=None, check: bool = True):
        """Codebook vectors for `indices` (int ``[...]`` in ``[0, num_embeddings)``) ->
        float32 ``[..., embedding_dim]`` (`codebook`: a constant copy of `self.codebook` to use
        instead of the variables). Out-of-range indices raise InvalidArgumentError (a GPU
        gather would silently return zeros) unless not `check`."""
        indices = check_indices(self, indices, check)
        if codebook is None:
            if not self.built:
                self.build((None, self.embedding_dim))
            codebook = self.codebook
        return tf.gather(codebook, indices)

    # ---------------------------------------------------------------- training-time state

    def _row_keys(self, global_index, step, salt):
        """Pseudo-random, distinct keys (float64 in [0, 2**32)) of rows by their index in the
        global batch: a bijective hash of the index, seeded by (seed, step, salt). Every replica
        split of a batch gives every row the same key, so draws do not depend on the split."""
        step = tf.cast(step * 4 + salt, tf.uint32)
        mix = _mix32(tf.bitwise.bitwise_xor(_mix32(tf.constant(self.seed % 2**32, tf.uint32)), step))
        other = _mix32(mix + tf.constant(0x9E3779B9, tf.uint32))
        keys = _mix32(tf.bitwise.bitwise_xor(_mix32(tf.cast(global_index, tf.uint32) + mix), other))
        return tf.cast(keys, tf.float64)

    def _local_draw(self, flat, keys, size):
        """This replica's `size` rows of largest key (padding rows: key -1), as gathered fields."""
        rows = tf.concat([flat, tf.zeros([size, self.embedding_dim], flat.dtype)], axis=0)
        top, picks = tf.math.top_k(tf.concat([keys, -tf.ones([size], tf.float64)], axis=0), k=size)
        # Keys travel in two exact float32 halves (the all-reduce is float32).
        high = tf.floor(top / 65536.0)
        return {"rows": tf.gather(rows, picks), "key_high": high, "key_low": top - high * 65536.0}

    def _global_draw(self, gathered, size):
        """The `size` rows of largest key over all replicas ([size, D], sorted by key) and the
        number of real rows among them: a uniform draw without replacement from the global batch."""
        keys = tf.cast(gathered["key_high"], tf.float64) * 65536.0 + tf.cast(gathered["key_low"], tf.float64)
        top, picks = tf.math.top_k(tf.reshape(keys, [-1]), k=size)
        rows = tf.gather(tf.reshape(gathered["rows"], [-1, self.embedding_dim]), picks)
        return rows, tf.reduce_sum(tf.cast(top >= 0.0, tf.int32))

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
            assign = tf.argmin(_squared_distances(sample, centroids), axis=1, output_type=tf.int32)
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
            offset, total = _replica_offset(num_vectors)
        if restarts:
            draw = self._local_draw(flat, self._row_keys(offset + tf.range(num_vectors), step, 2), self.num_embeddings)
            gathered.update({f"restart_{k}": v for k, v in draw.items()})
        distributed = _replica_context() is not None

        def kmeans_draw():
            return self._local_draw(flat, self._row_keys(offset + tf.range(num_vectors), step, 1), kmeans_size)

        if kmeans and distributed:
            # Every step carries the sample (only the first uses it): a collective's shape must
            # not change from step to step inside a compiled training loop.
            gathered.update({f"kmeans_{k}": v for k, v in kmeans_draw().items()})
        summed, gathered = sync_across_replicas(summed, gathered)
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
                self.num_embeddings,
            )
            reseeded = tf.logical_or(reseeded, self._restart_dead_codes(candidates, num_candidates))
        self.reseeded.assign(tf.cast(reseeded, tf.float32))
        return summed["counts"]

    def _extra_statistics(self, flat, indices_flat) -> dict:
        """Per-step statistics (summed over replicas) a subclass needs in `_ema_update`."""
        return {}

    def _ema_update(self, summed):
        pass

    def _restart_dead_codes(self, candidates, num_candidates):
        """candidates [K, D]: distinct rows of the global batch in random order, the first
        `num_candidates` real. Returns the bool [K] mask of the codes restarted."""
        step = self.num_updates
        bias_correction = 1.0 - tf.pow(self.usage_decay, tf.cast(step, tf.float32))
        judged = tf.logical_or(self.restarted_at < 0, step - self.restarted_at >= self.grace_steps)
        dead = tf.logical_and(self.code_usage / bias_correction < self.dead_code_threshold, judged)
        rank = tf.cumsum(tf.cast(dead, tf.int32)) - 1  # the i-th dead code takes the i-th candidate
        restart = tf.logical_and(dead, rank < num_candidates)
        vectors = tf.gather(candidates, tf.clip_by_value(rank, 0, self.num_embeddings - 1))
        self._set_codes(restart, vectors, tf.fill([self.num_embeddings], max(1.0, self.dead_code_threshold)))
        self.code_usage.assign(tf.where(restart, self.dead_code_threshold * bias_correction, self.code_usage))
        self.restarted_at.assign(tf.where(restart, step, self.restarted_at))
        self.num_restarts.assign_add(tf.reduce_sum(tf.cast(restart, tf.int64)))
        return restart

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
            restart_grace_steps=self.restart_grace_steps,
            distance=self.distance,
            gradient=self.gradient,
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

    def _set_codes(self, mask, vectors, sizes):
        # Keep the EMA state consistent with the new rows: N_i = the vectors per step each new row
        # stands for (its k-means cluster size, or max(1, threshold) for a restart), m_i = e_i N~_i,
        # so that the codebook is exactly `vectors` and the next update starts from there.
        cluster_size = tf.where(mask, sizes, self.ema_cluster_size)
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
