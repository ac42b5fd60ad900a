"""Finite scalar quantization (FSQ): a codebook-free quantizer.

"Finite Scalar Quantization: VQ-VAE Made Simple", Mentzer, Minnen, Agustsson, Tschannen (2023),
arXiv:2309.15505, section 3 and appendix A.1: each of d channels is bounded to L_i levels
(``tanh``, shifted so that an even L_i rounds to L_i integers), rounded with a straight-through
gradient and scaled to [-1, 1]; the code of a position is the mixed-radix number of its d
digits, so the implicit codebook is the grid of prod(L_i) points and no code can collapse.

Where this layer departs from the paper's reference code (google-research's FSQ notebook,
``bound(z) = tanh(z + tan(offset / half_l)) * half_l - offset``): the shift is
``arctanh(offset / half_l)``, which makes bound(0) = 0 exactly (the notebook's tan agrees with it to
third order: for L = 8 the two shifts differ by 1e-5, moving a rounding boundary by as much), and
for L = 2 no shift at all, since arctanh(offset / half_l) does not exist there (the ratio is above
1): the notebook's tan(1.001) = 1.56 puts the boundary between L = 2's two levels at z = -1.56,
where a zero-mean input falls almost always on one side; here it sits at z = 0, so the two levels
split such inputs evenly. `tests/test_quantizer_zoo.py` compares both with the notebook's formula.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from vqvae_tf.layers import SERIALIZATION_PACKAGE
from vqvae_tf.layers.quantizers.base import Quantizer
from vqvae_tf.layers.quantizers.ops import batch_perplexity
from vqvae_tf.layers.quantizers.registry import Option, register_quantizer
from vqvae_tf.utils.distribute import sync_across_replicas

# Largest implicit codebook: per-step counts of every code travel through an all-reduce.
MAX_CODES = 2**20


def validate_levels(levels) -> tuple:
    """`levels` as a tuple of ints, each >= 2, whose product is at most `MAX_CODES`; ValueError
    naming the problem otherwise."""
    try:
        values = tuple(levels)
    except TypeError:
        raise ValueError(f"levels must be a list of integers >= 2, got {levels!r}.") from None
    if not values:
        raise ValueError("levels must not be empty: FSQ needs one level count per channel, e.g. [8, 5, 5, 5].")
    if any(isinstance(v, bool) or int(v) != v or v < 2 for v in values):
        raise ValueError(f"every entry of levels must be an integer >= 2, got {list(values)}.")
    values = tuple(int(v) for v in values)
    if math.prod(values) > MAX_CODES:
        raise ValueError(f"levels {list(values)} make {math.prod(values)} codes; at most {MAX_CODES} are supported.")
    return values


FSQ_LEVELS = Option(
    "fsq_levels",
    (8, 5, 5, 5),
    "FSQ levels per channel, e.g. 8,5,5,5 (1000 codes) or 8,6,5 (240); each >= 2. They fix K and D.",
    arg="levels",
    type="int_list",
    architecture=True,
)


@register_quantizer("fsq", FSQ_LEVELS, help="finite scalar quantization (--fsq_levels): no codebook")
@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class FiniteScalarQuantizer(Quantizer):
    """Finite scalar quantizer with `VectorQuantizer`'s contract.

    Args:
      levels: quantization levels per channel, e.g. [8, 5, 5, 5] (1000 codes, the paper's
        2^10 setting) or [8, 6, 5] (240 codes, its 2^8 one). Each >= 2.
      embedding_dim: the size of the input's last axis; must equal ``len(levels)`` (None: that).
        The projection into ``len(levels)`` channels is the encoder's last layer.
      num_embeddings: must equal ``prod(levels)`` (None: that); for the common constructor.
      data_init: if True (default), the first training call sets a fixed per-channel input scale
        (``input_scale``, not trained) to 1 / RMS of that (global) batch's inputs, so that the
        bounded values start spread over the levels. Without it an encoder whose outputs start
        small (as ours do, ~0.03) maps every position to the centre code: the decoder then sees a
        constant zero input, its ReLUs pass no gradient, and training never leaves that state
        (measured: [8, 5, 5, 5] stays at perplexity 1). `reinitialize()` makes the next training
        call set it again.
      **kwargs: passed to `keras.layers.Layer`.

    Call args:
      inputs: float tensor ``[..., len(levels)]``.
      training: with ``tf.distribute``, makes ``perplexity`` that of the global batch.

    Returns a dict:
      ``quantized``: the grid point, each channel in [-1, 1], in the compute dtype; gradient w.r.t.
        the input: the bounding function's (rounding is straight-through).
      ``indices``: int32 ``inputs.shape[:-1]`` in ``[0, prod(levels))``.
      ``codebook_loss``, ``commitment_loss``: float32 zeros (FSQ has no codebook to fit or commit
        to; they are kept so that every quantizer reports the same keys).
      ``perplexity``: exp(entropy) of the code usage in the batch.

    Example:
    >>> fsq = FiniteScalarQuantizer([8, 5, 5, 5])
    >>> fsq.num_embeddings
    1000
    """

    codes_per_position = 1

    def __init__(
        self,
        levels=(8, 5, 5, 5),
        embedding_dim: int | None = None,
        data_init: bool = True,
        num_embeddings: int | None = None,
        **kwargs,
    ):
        levels = validate_levels(levels)
        _, _, _ = self.geometry(num_embeddings, embedding_dim, levels=levels, strict=True)
        super().__init__(math.prod(levels), len(levels), **kwargs)
        self.data_init = bool(data_init)
        self.levels = levels
        levels_np = np.asarray(self.levels, np.float64)
        eps = 1e-3
        self._half_l = ((levels_np - 1.0) * (1.0 - eps) / 2.0).astype(np.float32)
        self._offset = np.where(levels_np % 2 == 1, 0.0, 0.5).astype(np.float32)
        # The shift makes bound(0) = 0 for even L; L = 2 cannot reach 0 (its levels are -1 and 0),
        # so it keeps no shift: the boundary between its two levels sits at z = 0.
        ratio = self._offset / self._half_l
        self._shift = np.where(ratio < 1.0, np.arctanh(np.minimum(ratio, 0.999)), 0.0).astype(np.float32)
        self._half_width = (np.asarray(self.levels) // 2).astype(np.float32)
        self._basis = np.concatenate([[1], np.cumprod(self.levels[:-1])]).astype(np.int32)

    @classmethod
    def geometry(cls, num_embeddings=None, embedding_dim=None, levels=FSQ_LEVELS.default, strict=False, **options):
        """(prod(levels), len(levels), 1): the levels fix K and D. With `strict`, a K or D given
        otherwise is a ValueError (what the constructor checks)."""
        levels = validate_levels(levels)
        k, d = math.prod(levels), len(levels)
        if strict and embedding_dim is not None and embedding_dim != d:
            raise ValueError(
                f"FiniteScalarQuantizer quantizes one channel per level: embedding_dim must be len(levels)="
                f"{d} for levels {list(levels)}, got embedding_dim={embedding_dim}."
            )
        if strict and num_embeddings is not None and num_embeddings != k:
            raise ValueError(
                f"FiniteScalarQuantizer with levels {list(levels)} has prod(levels)={k} codes, got num_embeddings="
                f"{num_embeddings}."
            )
        return k, d, 1

    def _dim_note(self) -> str:
        return f" (len(levels)={self.embedding_dim}, levels {list(self.levels)})"

    def build_state(self):
        self.input_scale = self.add_weight(
            name="input_scale", shape=(self.embedding_dim,), initializer="ones", trainable=False, autocast=False
        )
        self.num_updates = self.add_weight(
            name="num_updates", shape=(), initializer="zeros", dtype="int64", trainable=False, autocast=False
        )

    # ---------------------------------------------------------------- the arithmetic

    def bound(self, z):
        """float32 z -> values in (-L/2, L/2) per channel (shifted for even L so that rounding
        gives exactly L integers): ``tanh(z + shift) * half_l - offset``."""
        return tf.tanh(z + self._shift) * self._half_l - self._offset

    def _digits_to_values(self, digits):
        return (tf.cast(digits, tf.float32) - self._half_width) / self._half_width

    def indices_from_values(self, values):
        """Grid points float ``[..., len(levels)]`` (`lookup`'s values, ``quantized``) -> their
        codes int32 ``[...]``: the inverse of `lookup`."""
        digits = tf.cast(tf.round(values * self._half_width + self._half_width), tf.int32)
        return tf.reduce_sum(digits * self._basis, axis=-1)

    def _quantize(self, z, scale=None):
        bounded = self.bound(z * (tf.convert_to_tensor(self.input_scale) if scale is None else scale))
        rounded = bounded + tf.stop_gradient(tf.round(bounded) - bounded)  # straight-through rounding
        return rounded / self._half_width

    # ---------------------------------------------------------------- the contract

    def call(self, z, training=False):
        if training:
            self._data_init(z)
        values = self._quantize(z)
        indices = self.indices_from_values(values)
        zero = tf.zeros([], tf.float32)
        return {
            "quantized": values,
            "indices": indices,
            "codebook_loss": zero,
            "commitment_loss": zero,
            "perplexity": batch_perplexity(indices, self.num_embeddings, training),
        }

    def _data_init(self, z):
        """On the first training call (with `data_init`): input_scale = 1 / RMS per channel of the
        global batch (an unconditional masked assign: the all-reduce may not sit in a tf.cond)."""
        flat = tf.reshape(z, [-1, self.embedding_dim])
        summed = sync_across_replicas(
            {"squares": tf.reduce_sum(tf.square(flat), axis=0), "count": tf.cast(tf.shape(flat)[0], tf.float32)}
        )[0]
        rms = tf.sqrt(tf.math.divide_no_nan(summed["squares"], summed["count"]))
        first = tf.logical_and(tf.equal(self.num_updates, 0), summed["count"] > 0)
        if self.data_init:
            scale = tf.where(rms > 1e-12, 1.0 / tf.maximum(rms, 1e-12), 1.0)
            self.input_scale.assign(tf.where(first, scale, self.input_scale))
        self.num_updates.assign_add(1)

    def indices_of(self, z, codebook=None):
        """Codes of float z ``[..., len(levels)]`` -> int32 ``[...]`` without touching state
        (`codebook`: ignored; the grid needs none)."""
        self._ensure_built()
        return self.indices_from_values(self._quantize(tf.cast(z, tf.float32)))

    def lookup(self, indices, codebook=None, check: bool = True):
        """Codes int ``[...]`` in ``[0, prod(levels))`` -> grid points float32 ``[..., len(levels)]``
        (computed; `codebook`, a copy of `self.codebook`, is used instead when given; `check`:
        range-check the codes)."""
        indices = self.checked_indices(indices, check)
        if codebook is not None:
            return tf.gather(codebook, indices)
        return self._digits_to_values((indices[..., None] // self._basis) % np.asarray(self.levels, np.int32))

    @property
    def codebook(self):
        """The implicit codebook: every grid point, float32 ``[prod(levels), len(levels)]``."""
        return self.lookup(tf.range(self.num_embeddings))

    def reinitialize(self) -> None:
        """The next training call sets `input_scale` from its batch again (with `data_init`)."""
        if not self.data_init:
            raise ValueError(f"{self.name}: re-initialising FSQ's input scale needs data_init=True.")
        self.num_updates.assign(0)

    def get_config(self):
        config = super().get_config()
        config.update(levels=list(self.levels), embedding_dim=self.embedding_dim, data_init=self.data_init)
        return config
