"""`Quantizer`: the contract every quantizer of the zoo keeps, held in code.

A subclass implements ``call(z, training=False)`` on float32 ``z [..., embedding_dim]`` and returns
the dict below, plus ``lookup(indices, codebook=None, check=True)`` and ``indices_of(z,
codebook=None)``. The base class does the rest, so that `VQVAE`, the codes export, the priors,
the SavedModel signatures and the TFLite files work with any quantizer, including one written in a
user's own module:

- the input is checked (a float tensor whose last axis is ``embedding_dim``, at build time and,
  when only known then, at run time) and cast to float32 whatever the dtype policy (distances,
  rounding and residuals in bfloat16 would pick other codes); ``quantized`` comes back in the
  layer's compute dtype;
- the output dict always has ``quantized``, ``indices`` (int32), ``codebook_loss``,
  ``commitment_loss``, ``perplexity`` and ``entropy_loss`` (float32 scalars; 0 when the subclass
  gives none), and `compute_output_spec` describes it symbolically;
- the variables are created lazily in `build_state` (called by `build`, after the check);
- defaults: ``codes_per_position`` 1 (a residual quantizer's depth otherwise: its ``indices`` have
  that last axis), ``num_restarts`` 0, `reinitialize` (nothing to forget), `reseedable_codebooks`
  (none: a gradient-trained codebook whose rows a restart replaces lists (variable, mask) pairs),
  ``codebook`` (every code's vector, for graphs that must not read variables).

Geometry for models and configs, from arguments alone: `geometry` gives (K, D, codes per
position) for the options, so that FSQ's levels or LFQ's bits fix K and D in one place.
"""

from __future__ import annotations

import functools
import inspect

import keras
import tensorflow as tf

from vqvae_tf.utils import checks

OUTPUT_KEYS = ("quantized", "indices", "codebook_loss", "commitment_loss", "perplexity", "entropy_loss")


def _contract_call(call):
    """Wraps a subclass's `call`: checks and casts the input, completes and casts the output."""

    @functools.wraps(call)
    def wrapped(self, inputs, training=False, **kwargs):
        x = tf.convert_to_tensor(inputs)
        if not x.dtype.is_floating:
            raise TypeError(f"{self.name}: inputs must be a float tensor, got dtype {x.dtype.name}.")
        if x.shape.rank is not None and x.shape[-1] is not None:
            self._check_last_dim(x.shape)
        elif x.shape.rank is not None:  # the last dimension is only known at run time
            dims = tf.shape(x)
            x = checks.require(
                x,
                tf.equal(dims[-1], self.embedding_dim),
                f"{self.name}: last dimension of the input must be embedding_dim={self.embedding_dim}, got",
                dims[-1],
            )
        out = dict(call(self, tf.cast(x, tf.float32), training=training, **kwargs))
        missing = [k for k in OUTPUT_KEYS[:-1] if k not in out]
        if missing:
            raise ValueError(f"{type(self).__name__}.call must return {list(OUTPUT_KEYS[:-1])}; missing {missing}.")
        out["quantized"] = tf.cast(out["quantized"], self.compute_dtype)
        out["indices"] = tf.cast(out["indices"], tf.int32)
        for key in OUTPUT_KEYS[2:]:
            out[key] = tf.cast(out.get(key, tf.zeros([], tf.float32)), tf.float32)
        return out

    wrapped._quantizer_contract = True
    return wrapped


class Quantizer(keras.layers.Layer):
    """Base layer of every quantizer (see the module docstring for the contract).

    Args:
      num_embeddings: K, the range of one code.
      embedding_dim: D, the size of the input's last axis.
      **kwargs: passed to `keras.layers.Layer` (name, dtype policy, ...).

    Call returns a dict:
      ``quantized``: same shape as the input, the compute dtype.
      ``indices``: int32 ``inputs.shape[:-1]`` (+ ``[codes_per_position]`` when that is > 1).
      ``codebook_loss``, ``commitment_loss``, ``entropy_loss``: float32 scalars, added to the
        training loss by `VQVAE`.
      ``perplexity``: float32 scalar, exp(entropy) of the code usage in the batch.
    """

    codes_per_position = 1

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        call = cls.__dict__.get("call")
        if call is not None and not getattr(call, "_quantizer_contract", False):
            cls.call = _contract_call(call)

    def __init__(self, num_embeddings: int, embedding_dim: int, **kwargs):
        super().__init__(**kwargs)
        checks.positive_int("num_embeddings", num_embeddings)
        checks.positive_int("embedding_dim", embedding_dim)
        self.num_embeddings = int(num_embeddings)
        self.embedding_dim = int(embedding_dim)

    def get_config(self):
        """Keras' convention: the base records its own arguments (K and D) and a subclass adds
        its own to ``super().get_config()``."""
        return dict(super().get_config(), num_embeddings=self.num_embeddings, embedding_dim=self.embedding_dim)

    @classmethod
    def from_config(cls, config):
        """The layer of `config`, passing the constructor only the base's arguments it names (FSQ's
        levels fix K and D: its constructor takes no num_embeddings). A config that still cannot
        rebuild the layer is a TypeError naming the class and the argument, in one line."""
        config = dict(config)
        named = inspect.signature(cls.__init__).parameters
        for base_argument in ("num_embeddings", "embedding_dim"):
            if base_argument not in named:
                config.pop(base_argument, None)
        try:
            return cls(**config)
        except TypeError as e:
            raise TypeError(
                f"{cls.__name__} cannot be rebuilt from its config ({e}); its get_config must record every "
                f"argument of its constructor (recorded: {', '.join(sorted(config))})."
            ) from None

    # ---------------------------------------------------------------- geometry (from arguments)

    @classmethod
    def geometry(cls, num_embeddings: int, embedding_dim: int, **options) -> tuple:
        """(K, D, codes per position) of a layer made with these arguments: what a model's code
        grids and a config's fields follow. Raises ValueError for K or D that the options fix
        otherwise (FSQ's levels, LFQ's bits)."""
        return int(num_embeddings), int(embedding_dim), 1

    @classmethod
    def from_options(cls, num_embeddings: int, embedding_dim: int, seed: int = 0, **options):
        """A layer for a model: its K, D, seed (passed when the constructor takes one) and options."""
        if "seed" in inspect.signature(cls.__init__).parameters:
            options["seed"] = seed
        return cls(num_embeddings=num_embeddings, embedding_dim=embedding_dim, **options)

    # ---------------------------------------------------------------- build

    def _check_last_dim(self, input_shape):
        last = input_shape[-1] if input_shape else None
        if last is not None and last != self.embedding_dim:
            raise ValueError(
                f"{self.name}: the last dimension of the input must be embedding_dim="
                f"{self.embedding_dim}{self._dim_note()}, got input shape {tuple(input_shape)}."
            )

    def _dim_note(self) -> str:
        """Said after embedding_dim=D in the last-dimension error (e.g. what fixes D)."""
        return ""

    def build(self, input_shape):
        if self.built:
            return
        self._check_last_dim(input_shape)
        self.build_state()
        self.built = True

    def build_state(self) -> None:
        """Creates the layer's variables (none by default)."""

    def _ensure_built(self):
        if not self.built:
            self.build((None, self.embedding_dim))

    def compute_output_spec(self, inputs, training=False):
        shape = tuple(inputs.shape)
        scalar = keras.KerasTensor((), dtype="float32")
        depth = () if self.codes_per_position == 1 else (self.codes_per_position,)
        spec = {
            "quantized": keras.KerasTensor(shape, dtype=self.compute_dtype),
            "indices": keras.KerasTensor(shape[:-1] + depth, dtype="int32"),
        }
        return dict(spec, **{key: scalar for key in OUTPUT_KEYS[2:]})

    # ---------------------------------------------------------------- indices <-> vectors

    def checked_indices(self, indices, check: bool = True):
        """Integer `indices` as int32, checked in graph to be in [0, num_embeddings) unless not
        `check` (TypeError / InvalidArgument naming the problem otherwise)."""
        indices = tf.convert_to_tensor(indices)
        if not indices.dtype.is_integer:
            raise TypeError(f"{self.name}.lookup: indices must be integers, got dtype {indices.dtype.name}.")
        indices = tf.cast(indices, tf.int32)
        return checks.in_range(indices, 0, self.num_embeddings, "codes") if check else indices

    def lookup(self, indices, codebook=None, check: bool = True):
        """Codes int ``[...]`` (``[..., codes_per_position]``) -> vectors float32 ``[..., D]``;
        `codebook`: a constant copy of `codebook` to use instead of the variables; `check`:
        range-check the codes (graphs that cannot, e.g. TFLite, pass False)."""
        raise NotImplementedError(f"{type(self).__name__} must implement lookup(indices, codebook=None, check=True).")

    def indices_of(self, z, codebook=None):
        """Codes of float z ``[..., D]`` without touching state (`codebook`: as in `lookup`)."""
        raise NotImplementedError(f"{type(self).__name__} must implement indices_of(z, codebook=None).")

    @property
    def codebook(self):
        """Every code's vector, float32 ``[K, D]``: what `lookup(indices, codebook)` gathers from."""
        return self.lookup(tf.range(self.num_embeddings))

    # ---------------------------------------------------------------- training-time state

    @property
    def num_restarts(self):
        """Dead codes restarted so far (int64 scalar)."""
        return tf.zeros([], tf.int64)

    def reinitialize(self) -> None:
        """Forgets what the layer was fitted to before fine-tuning on other data (nothing here)."""

    def reseedable_codebooks(self) -> list:
        """[(gradient-trained codebook variable, float32 [K] mask of rows re-seeded this step)]."""
        return []


class GatheredCodebookQuantizer(Quantizer):
    """A quantizer whose code c is row c of `codebook` and whose only options are a commitment
    weight and a seed (SimVQ, IBQ): their arguments, checks, config and `lookup`, in one place."""

    def __init__(self, num_embeddings: int, embedding_dim: int, commitment_cost: float = 0.25, seed: int = 0, **kwargs):
        super().__init__(num_embeddings, embedding_dim, **kwargs)
        if not commitment_cost >= 0:
            raise ValueError(f"commitment_cost must be >= 0, got {commitment_cost}.")
        self.commitment_cost = float(commitment_cost)
        self.seed = int(seed)

    def lookup(self, indices, codebook=None, check: bool = True):
        indices = self.checked_indices(indices, check)
        return tf.gather(self.codebook if codebook is None else codebook, indices)

    def get_config(self):
        return dict(super().get_config(), commitment_cost=self.commitment_cost, seed=self.seed)
