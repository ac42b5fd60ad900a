"""VQ-VAE's vector quantiser with a gradient-trained codebook.

"Neural Discrete Representation Learning", van den Oord, Vinyals, Kavukcuoglu (2017),
arXiv:1711.00937: section 3.1 (nearest-neighbour quantisation, eq. 1-2) and eq. 3 (the loss:
reconstruction + ||sg[z_e] - e||^2 + beta ||z_e - sg[e]||^2).

Beyond the paper: dead-code restart and k-means initialisation (`upkeep.CodebookUpkeep`),
float32 distances under mixed precision, l2-normalised (cosine) codebooks (Yu et al. 2021,
"Vector-quantized Image Modeling with Improved VQGAN", arXiv:2110.04627, section 3.2) and the
rotation trick as the gradient (Fifty et al. 2024, arXiv:2410.06424).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from vqvae_tf.layers import SERIALIZATION_PACKAGE
from vqvae_tf.layers.quantizers import options
from vqvae_tf.layers.quantizers.base import Quantizer
from vqvae_tf.layers.quantizers.ops import (
    DISTANCES,
    GRADIENTS,
    gradient_estimator,
    nearest_codes,
    nearest_rows,
    perplexity_from_counts,
)
from vqvae_tf.layers.quantizers.registry import register_quantizer
from vqvae_tf.layers.quantizers.upkeep import CodebookUpkeep
from vqvae_tf.utils import checks

CODEBOOK_OPTIONS = (
    options.COMMITMENT_COST,
    options.DEAD_CODE_THRESHOLD,
    options.KMEANS_INIT,
    options.DISTANCE,
    options.GRADIENT,
)


@register_quantizer("vq", *CODEBOOK_OPTIONS, help="gradient-trained codebook (paper eq. 3)")
@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class VectorQuantizer(CodebookUpkeep, Quantizer):
    """Nearest-neighbour vector quantiser with a gradient-trained codebook (paper eq. 1-3).

    Args:
      num_embeddings: K, the number of codebook vectors.
      embedding_dim: D, the size of each vector; the last dimension of the input.
      commitment_cost: beta in eq. 3 (0.25 in the paper).
      dead_code_threshold: 0 disables restarts. Otherwise, during training a code whose
        (bias-corrected) EMA of assignments per step falls below this value is re-seeded with an
        encoder output of the current (global) batch. The replacements are distinct rows drawn
        uniformly without replacement; when the batch has fewer rows than there are dead codes,
        or there are more than `MAX_RESTART_CANDIDATES` (2048) of them, only that many codes (the
        lowest-numbered dead ones) are restarted in the step, the others in the steps after.
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
    k-means install) tells an optimizer which rows' moments are stale (the training step resets
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
        super().__init__(num_embeddings, embedding_dim, **kwargs)
        checks.one_of("distance", distance, DISTANCES)
        checks.one_of("gradient", gradient, GRADIENTS)
        if not commitment_cost >= 0:
            raise ValueError(f"commitment_cost must be >= 0, got {commitment_cost}.")
        if not dead_code_threshold >= 0:
            raise ValueError(f"dead_code_threshold must be >= 0, got {dead_code_threshold}.")
        if not 0.0 <= usage_decay < 1.0:
            raise ValueError(f"usage_decay must be in [0, 1), got {usage_decay}.")
        checks.positive_int("kmeans_iterations", kmeans_iterations)
        if restart_grace_steps is not None:
            checks.positive_int("restart_grace_steps", restart_grace_steps)
        self.commitment_cost = float(commitment_cost)
        self.dead_code_threshold = float(dead_code_threshold)
        self.usage_decay = float(usage_decay)
        self.kmeans_init = bool(kmeans_init)
        self.kmeans_iterations = int(kmeans_iterations)
        self.seed = int(seed)
        self.restart_grace_steps = None if restart_grace_steps is None else int(restart_grace_steps)
        self.distance = distance
        self.gradient = gradient

    def build_state(self):
        # Sonnet's default: uniform variance scaling. The optimizer updates a gradient-trained
        # codebook in cross-replica context; every other write is identical on all replicas.
        self._codebook = self.add_weight(
            name="codebook",
            shape=(self.num_embeddings, self.embedding_dim),
            initializer=keras.initializers.VarianceScaling(distribution="uniform", seed=self.seed),
            trainable=self._codebook_trainable,
            autocast=False,
            aggregation="only_first_replica",
        )
        self.build_upkeep_state()
        self._build_extra_state()

    def _build_extra_state(self):
        pass

    @property
    def codebook_variable(self):
        """The codebook's variable ``[K, D]`` (what a converted checkpoint's codebook is assigned to)."""
        return self._codebook

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
        self.reset_upkeep()

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
        what the training step (`ImageAutoencoder._adjust_gradients`) clears the stale optimizer state of after a restart."""
        return [(self._codebook, self.reseeded)] if self._codebook.trainable else []

    def indices_of(self, z, codebook=None):
        """Nearest codes of float z ``[..., D]`` -> int32 ``[...]`` without touching state;
        `codebook`: a constant copy of `self.codebook` to use instead of the variables."""
        codebook = self.codebook if codebook is None else codebook
        return nearest_codes(self._effective(tf.cast(z, tf.float32)), codebook)

    # ---------------------------------------------------------------- forward

    def call(self, z, training=False):
        dims = tf.shape(z)
        flat = self._effective(tf.reshape(z, [-1, self.embedding_dim]))
        num_vectors = tf.shape(flat)[0]
        num_elements = tf.cast(num_vectors * self.embedding_dim, tf.float32)

        def quantize(codebook):
            """(indices, quantized with its gradient estimator, codebook loss, commitment loss)."""
            indices_flat = nearest_rows(flat, codebook)
            quantized_flat = tf.gather(codebook, indices_flat)
            commitment_loss = self.commitment_cost * tf.math.divide_no_nan(
                tf.reduce_sum(tf.square(flat - tf.stop_gradient(quantized_flat))), num_elements
            )
            codebook_loss = self._codebook_loss(flat, quantized_flat, num_elements)
            # Forward = e; backward: the identity to z_e (section 3.1) or the rotation trick.
            return indices_flat, gradient_estimator(self.gradient)(flat, quantized_flat), codebook_loss, commitment_loss

        indices_flat, quantized_st, codebook_loss, commitment_loss = quantize(self.codebook)
        counts = tf.math.unsorted_segment_sum(tf.ones_like(indices_flat, tf.float32), indices_flat, self.num_embeddings)
        if training:
            counts = self._update_state(tf.stop_gradient(flat), indices_flat, counts, num_vectors)
            if self.kmeans_init:
                # The call that installs the k-means codebook quantizes with it (as lucidrains'
                # does), so that what it passes on (a residual stage's residuals) is of the codes
                # in force from now on, not of the codebook it replaced. The perplexity stays that
                # of the statistics (the global batch's assignment before the install). The
                # install's codebook takes no gradient (every row is reseeded: `_adjust_gradients`
                # drops it). The results are chosen by tf.where, not tf.cond: TF 2.21's Grappler
                # breaks the gradient of that cond (ALREADY_EXISTS .../AddOpsRewrite_AddN/tmp_var
                # on the step after the install, with LPIPS-VGG or a discriminator in the step).
                installed = tf.equal(self.num_updates, 1)
                results = quantize(tf.stop_gradient(self.codebook))
                indices_flat, quantized_st, codebook_loss, commitment_loss = (
                    tf.where(installed, new, old)
                    for new, old in zip(results, (indices_flat, quantized_st, codebook_loss, commitment_loss))
                )

        return {
            "quantized": tf.reshape(quantized_st, dims),
            "indices": tf.reshape(indices_flat, dims[:-1]),
            "codebook_loss": codebook_loss,
            "commitment_loss": commitment_loss,
            "perplexity": perplexity_from_counts(counts),
        }

    def _codebook_loss(self, flat, quantized_flat, num_elements):
        return tf.math.divide_no_nan(tf.reduce_sum(tf.square(tf.stop_gradient(flat) - quantized_flat)), num_elements)

    def lookup(self, indices, codebook=None, check: bool = True):
        """Codebook vectors for `indices` (int ``[...]`` in ``[0, num_embeddings)``) ->
        float32 ``[..., embedding_dim]`` (`codebook`: a constant copy of `self.codebook` to use
        instead of the variables). Out-of-range indices raise InvalidArgumentError (a GPU
        gather would silently return zeros) unless not `check`."""
        indices = self.checked_indices(indices, check)
        if codebook is None:
            self._ensure_built()
            codebook = self.codebook
        return tf.gather(codebook, indices)

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
