"""An autoregressive transformer prior over code grids (VQGAN's, Esser et al. 2021; LlamaGen), with a
key/value-cached sampler.

The codes of a grid are a sequence in raster order (residual VQ's depths side by side along the
row, as for `PixelCNN`: column j holds depth j % depth, with its own code embedding and head).
The input at position t is the code at t - 1 (at t = 0 a start token: the class's, for a
class-conditional prior) plus the embedding of position t (a row's plus a column's: "axial", or
one per position: "learned"); decoder-only pre-norm causal blocks (`layers.transformer`); a final
LayerNorm and a linear head. `log_prob` is exact, as PixelCNN's.

Sampling (`sample_codes_graph`) is one `tf.while_loop` over positions with seeded picks (the
uniforms of (seed, position), as PixelCNN's sampler: the same under XLA) and, by default, per-block key/value
caches: each step runs the blocks on one token. Without the cache each step runs the whole
network on the whole grid; both give the same codes for the same seed.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from vqvae_tf.data import codes as codes_format
from vqvae_tf.layers import SERIALIZATION_PACKAGE
from vqvae_tf.layers.transformer import TransformerTrunk, sized_from_prior_config
from vqvae_tf.models import presets
from vqvae_tf.models.priors import sampling
from vqvae_tf.models.priors.base import AutoregressivePrior
from vqvae_tf.models.priors.inputs import PriorInputs
from vqvae_tf.models.priors.registry import PriorFamily, register_prior_family
from vqvae_tf.models.priors.sampling import pick_at
from vqvae_tf.utils import checks

POSITIONS = ("axial", "learned")


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class TransformerPrior(TransformerTrunk, AutoregressivePrior, PriorInputs, presets.PresetMixin, keras.Model):
    """Causal transformer over code grids: codes int32 [B,h,w] (+ labels [B]) -> logits [B,h,w,K].

    Args:
      num_embeddings: K, the number of codes.
      latent_shape: (h, w) of the code grid (w includes residual VQ's depths side by side).
      width: the model width D.
      num_layers: transformer blocks.
      num_heads: attention heads (D must be divisible by it).
      mlp_ratio: the MLP's hidden width over D.
      dropout: on the embeddings and inside the blocks (training only).
      num_classes: 0 for an unconditional prior, else the number of class labels (one start
        token per class).
      depth: codes per position of a residual quantizer, side by side along the row (1: plain).
      positions: "axial" (a row's plus a column's embedding) or "learned" (one per position).

    Example:
    >>> prior = TransformerPrior(num_embeddings=16, latent_shape=(7, 7), width=32, num_layers=2)
    >>> prior(tf.zeros([2, 7, 7], tf.int32)).shape
    TensorShape([2, 7, 7, 16])
    """

    prior_network = "transformer"
    condition_shape = None  # no spatial conditioning (PriorInputs' checks refuse a condition)
    condition_embeddings = 0

    def __init__(
        self,
        num_embeddings: int,
        latent_shape=(7, 7),
        width: int = 128,
        num_layers: int = 4,
        num_heads: int = 4,
        mlp_ratio: int = 4,
        dropout: float = 0.0,
        num_classes: int = 0,
        depth: int = 1,
        positions: str = "axial",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._check_trunk(num_embeddings, width, num_layers, num_heads, mlp_ratio, dropout, num_classes, depth)
        checks.one_of("positions", positions, POSITIONS)
        self.latent_shape = self.checked_grid(latent_shape, depth)
        self.positions = positions
        h, w = self.latent_shape
        self.token_embedding = keras.layers.Embedding(num_embeddings * depth, width, name="code_embedding")
        self.start_embedding = keras.layers.Embedding(max(num_classes, 1), width, name="start_embedding")
        init = keras.initializers.RandomNormal(stddev=0.02)
        if positions == "axial":
            self.row_embedding = self.add_weight(shape=(h, 1, width), initializer=init, name="row_embedding")
            self.column_embedding = self.add_weight(shape=(1, w, width), initializer=init, name="column_embedding")
        else:
            self.position_embedding = self.add_weight(shape=(h, w, width), initializer=init, name="position_embedding")
        self._make_trunk(causal=True)
        self._make_trackers()
        self.token_embedding.build((None,))
        self.start_embedding.build((None,))
        self._build_trunk()
        self.built = True

    # ---------------------------------------------------------------- forward

    def position_table(self):
        """The embedding of every position, in raster order: [h * w, D]."""
        h, w = self.latent_shape
        table = self.row_embedding + self.column_embedding if self.positions == "axial" else self.position_embedding
        return tf.reshape(table, [h * w, self.width])

    def embed_codes(self, codes, columns):
        """Codes int32 [...] in grid columns `columns` (broadcastable) -> [..., D]: each depth its own table."""
        if self.depth > 1:
            codes = codes + (columns % self.depth) * self.num_embeddings
        return self.token_embedding(codes)

    def start(self, labels, batch_size):
        """The start tokens [B, D]: each label's, or the one of an unconditional prior."""
        if labels is None:
            labels = tf.zeros(tf.reshape(batch_size, [1]), tf.int32)
        return self.start_embedding(labels)

    def logits_of(self, x, columns):
        """The last block's outputs [..., D] at positions in grid columns `columns` -> logits float32 [..., K]."""
        logits = tf.cast(self.head(self.final_norm(x)), tf.float32)
        return self.select_depth(logits, columns)

    def call(self, codes, labels=None, training=False, condition=None):
        if isinstance(codes, (tuple, list)):  # Keras' multi-input form, e.g. predict((codes, labels))
            codes, labels, *_ = codes
        codes = self.check_codes(codes)
        batch = tf.shape(codes)[0]
        labels = self.check_labels(labels, batch)
        self.check_condition(condition)
        h, w = self.latent_shape
        flat = tf.reshape(codes, [batch, h * w])
        embedded = self.embed_codes(flat[:, :-1], tf.range(h * w - 1) % w)  # inputs of positions 1..T-1
        x = tf.concat([self.start(labels, batch)[:, None], embedded], axis=1) + self.position_table()
        x = self.input_dropout(x, training=training)
        for block in self.blocks:
            x = block(x, training=training)
        logits = tf.cast(self.head(self.final_norm(x)), tf.float32)  # [B, T, depth K]
        logits = tf.reshape(logits, [batch, h, w, self.depth * self.num_embeddings])
        return self.select_depth(logits)

    # ---------------------------------------------------------------- sampling

    def get_config(self):
        return dict(
            super().get_config(),
            **self._trunk_config(),
            positions=self.positions,
        )


def sample_codes_graph(prior, num_samples, temperature, seed, labels=None, top_k=None, cache=True):
    """Ancestral sampling from a `TransformerPrior` as TF ops: num_samples int32 scalar,
    temperature float32 scalar (> 0), seed int32 scalar, labels int32 [num_samples] or None,
    top_k a Python int or None; `cache`: the key/value-cached sampler (else the whole network at
    every position). Returns int32 codes [num_samples, h, w]."""
    num_samples = tf.convert_to_tensor(num_samples, tf.int32)
    temperature = tf.convert_to_tensor(temperature, tf.float32)
    seed = tf.cast(seed, tf.int32)
    num_samples = checks.require(num_samples, num_samples > 0, "num_samples must be > 0, got", num_samples)
    temperature = checks.require(temperature, temperature > 0, "temperature must be > 0, got", temperature)
    if top_k is not None and (not isinstance(top_k, int) or not 1 <= top_k <= prior.num_embeddings):
        raise ValueError(f"top_k must be in [1, num_embeddings] ({prior.num_embeddings}), got {top_k!r}.")
    return decode(
        prior, num_samples, labels, lambda logits, p: sampling.pick(logits, temperature, seed, p, top_k), cache
    )


def sample_codes_from_uniforms_graph(prior, uniforms, temperature, labels=None):
    """The cached sampler driven by caller-supplied uniforms float32 [N, h*w] (the on-device
    generator's, where random ops are not builtins): position p picks at ``uniforms[:, p]``, so
    uniforms equal to `hash_random.uniform(seed, p, [N])` give `sample_codes_graph`'s codes."""
    pick = lambda logits, p: pick_at(logits, temperature, tf.gather(uniforms, p, axis=1))  # noqa: E731
    return decode(prior, tf.shape(uniforms)[0], labels, pick, cache=True)


def decode(prior, num_samples, labels, pick, cache=True):
    """The sampling loop: `pick(logits [N, K], position)` -> int32 codes [N] chooses each code."""
    h, w = prior.latent_shape
    length = h * w
    labels = prior.check_labels(labels, num_samples)
    codes = tf.ensure_shape(tf.zeros(tf.stack([num_samples, h, w]), tf.int32), [None, h, w])

    if not cache:

        def body(position, codes):
            logits = tf.reshape(prior(codes, labels), [-1, length, prior.num_embeddings])[:, position]
            return position + 1, sampling.place(codes, position, pick(logits, position))

        return tf.while_loop(lambda p, c: p < length, body, [tf.constant(0), codes])[1]

    positions = tf.cast(prior.position_table(), prior.compute_dtype)
    caches = [block.empty_cache(num_samples, length, tf.float32) for block in prior.blocks]

    def cached_body(position, x, codes, caches):
        x = x + positions[position]
        new_caches = []
        for block, (keys, values) in zip(prior.blocks, caches):
            x, keys, values = block.step(x, keys, values, position)
            new_caches.append((keys, values))
        code = pick(prior.logits_of(x, position % w), position)
        following = prior.embed_codes(code, position % w)  # the input of the next position
        return position + 1, tf.cast(following, x.dtype), sampling.place(codes, position, code), new_caches

    x = tf.cast(prior.start(labels, num_samples), prior.compute_dtype)
    _, _, codes, _ = tf.while_loop(
        lambda p, *_: p < length, cached_body, [tf.constant(0), x, codes, caches], parallel_iterations=1
    )
    return codes


def transformer_arguments(network: dict, meta: dict) -> dict:
    """The transformer priors' arguments from the prior config's network fields and the codes' meta."""
    return dict(
        num_embeddings=network["num_embeddings"],
        latent_shape=tuple(codes_format.grid_shapes(meta)["codes"]),
        **sized_from_prior_config(network["num_filters"], network["num_layers"]),
        dropout=network["dropout"],
        num_classes=network["num_classes"],
        depth=meta.get("depth", 1),
    )


@register_prior_family("transformer")
class TransformerFamily(PriorFamily):
    """A causal transformer over one code grid (residual VQ's depth side by side): the prior
    config's `num_filters` is its width, `num_layers` its blocks (None: 4), `dropout` its dropout;
    4 attention heads (fewer when the width is not divisible by 4). It sees the whole grid at any
    depth, so nothing is sized to the grid."""

    cls = TransformerPrior
    title = "causal transformer"

    def build(self, network: dict, meta: dict):
        return self.cls(**transformer_arguments(network, meta))


# Its samplers (`AutoregressivePrior`): the key/value-cached ones above.
TransformerPrior.codes_sampler = staticmethod(sample_codes_graph)
TransformerPrior.uniforms_sampler = staticmethod(sample_codes_from_uniforms_graph)
