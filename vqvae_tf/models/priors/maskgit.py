"""MaskGIT's prior (Chang et al. 2022, arXiv:2202.04200): a bidirectional transformer over code grids
with a [MASK] token, trained to fill in masked codes and sampled in a few parallel steps.

Training masks, per grid, ceil(gamma(r) T) of its T codes (at least one) at random, r ~ U(0, 1),
with the cosine schedule gamma(r) = cos(pi r / 2), and scores the masked ones (cross-entropy).
A class-conditional prior has a class token in front of the grid; with `class_dropout` it is
replaced by a null class that often in training, which classifier-free guidance needs.

Sampling (`sample_codes_graph`) starts from an all-masked grid and runs `steps` iterations: predict
every masked code (temperature, seeded picks from the uniforms of (seed, step), `hash_random`,
the same under XLA), score each pick by its
log-probability plus Gumbel noise scaled by ``choice_temperature * (1 - (s + 1) / steps)`` (the
paper's annealed randomness), and keep masked the floor(gamma((s + 1) / steps) T) least confident
of the codes predicted this step, clamped as google-research/maskgit's decoder does to reveal at
least one code per step and keep one for the next (`keep_masked`); the last step fills all. With `guidance` g > 0 the logits are
(1 + g) conditional - g unconditional.

Residual VQ's depths lie side by side along the row, as for the other priors: each depth of a
position is its own token, so a step predicts a position's depths together (independently given
what is unmasked). MaskGIT has no exact likelihood: its metric is the masked-token NLL (nats per
masked code; `bits_per_code` is that in bits), not a bound on bits per dimension.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from vqvae_tf.layers import SERIALIZATION_PACKAGE
from vqvae_tf.layers.transformer import TransformerTrunk
from vqvae_tf.models import presets
from vqvae_tf.models.priors.base import GridPrior, codes_and_labels
from vqvae_tf.models.priors.inputs import PriorInputs
from vqvae_tf.models.priors.registry import PriorFamily, register_prior_family
from vqvae_tf.models.priors.sampling import pick_at
from vqvae_tf.models.priors.transformer import transformer_arguments
from vqvae_tf.utils import checks, hash_random


def cosine_schedule(ratio):
    """gamma(r) = cos(pi r / 2): the fraction of codes masked at r in [0, 1]."""
    return tf.cos(math.pi / 2.0 * ratio)


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class MaskGITPrior(TransformerTrunk, GridPrior, PriorInputs, presets.PresetMixin, keras.Model):
    """Bidirectional transformer over code grids: codes int32 [B,h,w], mask bool [B,h,w] (True:
    masked) (+ labels [B]) -> logits float32 [B,h,w,K] of every position.

    Args: as `TransformerPrior`'s (num_embeddings, latent_shape, width, num_layers, num_heads,
    mlp_ratio, dropout, num_classes, depth), and class_dropout: how often training replaces the
    class by the null class (classifier-free guidance; 0 for an unconditional prior).
    """

    prior_network = "maskgit"
    condition_shape = None
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
        class_dropout: float = 0.1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._check_trunk(num_embeddings, width, num_layers, num_heads, mlp_ratio, dropout, num_classes, depth)
        if not 0.0 <= class_dropout < 1.0:
            raise ValueError(f"class_dropout must be in [0, 1), got {class_dropout}.")
        self.latent_shape = self.checked_grid(latent_shape, depth)
        self.class_dropout = float(class_dropout) if num_classes else 0.0
        h, w = self.latent_shape
        self.mask_id = num_embeddings * depth  # the [MASK] token's row of the embedding
        self.token_embedding = keras.layers.Embedding(self.mask_id + 1, width, name="code_embedding")
        # Class tokens; the last row is the null class (unconditional, and guidance's other half).
        self.class_embedding = keras.layers.Embedding(num_classes + 1, width, name="class_embedding")
        init = keras.initializers.RandomNormal(stddev=0.02)
        self.position_embedding = self.add_weight(shape=(h * w + 1, width), initializer=init, name="position_embedding")
        self._make_trunk(causal=False)
        self._make_trackers()
        self.token_embedding.build((None,))
        self.class_embedding.build((None,))
        self._build_trunk()
        self.built = True

    @property
    def null_class(self) -> int:
        return self.num_classes

    def call(self, codes, mask=None, labels=None, training=False):
        """Logits float32 [B,h,w,K] of every position given the codes where `mask` is False
        (None: nothing masked); `labels` int32 [B] in [0, num_classes], num_classes being the
        null class (None for an unconditional prior)."""
        if isinstance(codes, (tuple, list)):
            codes, mask, *rest = codes
            labels = rest[0] if rest else labels
        codes = self.check_codes(codes)
        batch = tf.shape(codes)[0]
        h, w = self.latent_shape
        if self.num_classes == 0 and labels is not None:
            raise ValueError("This prior is unconditional (num_classes=0) but labels were given.")
        if labels is None:
            if self.num_classes:
                raise ValueError(f"This prior is class-conditional (num_classes={self.num_classes}): pass labels.")
            labels = tf.zeros(tf.reshape(batch, [1]), tf.int32)
        labels = checks.in_range(tf.reshape(tf.cast(labels, tf.int32), [-1]), 0, self.num_classes + 1, "labels")
        tokens = tf.reshape(codes, [batch, h * w])
        if self.depth > 1:
            tokens += (tf.range(h * w) % w % self.depth) * self.num_embeddings
        if mask is not None:
            tokens = tf.where(tf.reshape(tf.cast(mask, tf.bool), [batch, h * w]), self.mask_id, tokens)
        x = tf.concat([self.class_embedding(labels)[:, None], self.token_embedding(tokens)], axis=1)
        x = self.input_dropout(x + self.position_embedding, training=training)
        for block in self.blocks:
            x = block(x, training=training)
        logits = tf.cast(self.head(self.final_norm(x[:, 1:])), tf.float32)
        return self.select_depth(tf.reshape(logits, [batch, h, w, self.depth * self.num_embeddings]))

    # ---------------------------------------------------------------- training

    def random_mask(self, batch, seed):
        """bool [B,h,w]: per grid ceil(gamma(r) T) positions masked (at least 1), r ~ U(0, 1)."""
        h, w = self.latent_shape
        length = h * w
        ratio = tf.random.stateless_uniform([batch], seed)
        count = tf.maximum(tf.cast(tf.math.ceil(cosine_schedule(ratio) * length), tf.int32), 1)
        scores = tf.random.stateless_uniform([batch, length], seed + 1)
        ranks = tf.argsort(tf.argsort(scores, axis=-1), axis=-1)  # each position's rank in its grid
        return tf.reshape(ranks < count[:, None], [batch, h, w])

    def _nll(self, data, training, seed=None):
        """Masked-token NLL of each grid (nats per masked code): float32 [B]."""
        codes, labels = codes_and_labels(data, self.num_classes)
        codes = tf.cast(codes, tf.int32)
        batch = tf.shape(codes)[0]
        if seed is None:  # training: a mask per step, so that a resumed run masks as an uninterrupted one
            seed = tf.stack([tf.cast(self.optimizer.iterations, tf.int32), 0])
        mask = self.random_mask(batch, seed)
        if labels is not None and training and self.class_dropout > 0:
            drop = tf.random.stateless_uniform([batch], seed + 2) < self.class_dropout
            labels = tf.where(drop, self.null_class, tf.cast(tf.reshape(labels, [-1]), tf.int32))
        logits = self(codes, mask, labels, training=training)
        nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=codes, logits=logits)
        masked = tf.cast(mask, tf.float32)
        return tf.reduce_sum(nll * masked, axis=[1, 2]) / tf.reduce_sum(masked, axis=[1, 2])

    def masked_nll(self, codes, labels=None, seed=(0, 1)):
        """The masked-token NLL of each grid (nats per masked code, float32 [B]) under the
        training schedule's masks drawn with `seed` (the metric `evaluate` reports: seed (0, 1))."""
        return self._nll((codes, labels), training=False, seed=tf.constant(seed, tf.int32))

    def test_step(self, data):
        return self._track(self._nll(data, training=False, seed=tf.constant([0, 1])))

    def sample_grids_graph(
        self, num_samples, temperature, seed, labels=None, top_k=None, steps=8, choice_temperature=4.5, guidance=0.0
    ) -> dict:
        """`sample_codes_graph` as {"codes": codes}."""
        return {
            "codes": sample_codes_graph(
                self, num_samples, temperature, seed, labels, top_k, steps, choice_temperature, guidance
            )
        }

    def generator_uniforms_shape(self, steps: int | None = None) -> list:
        """The per-sample shape of the TFLite generator's ``uniforms`` input: [steps, 2, h*w]
        (steps None: any, the input's shape sets it)."""
        return [steps, 2, self.latent_shape[0] * self.latent_shape[1]]

    def sample_from_uniforms_graph(self, uniforms, temperature, labels=None):
        """`sample_codes_graph` driven by `uniforms` [N, steps, 2, h*w] (the TFLite generator's)."""
        return sample_codes_graph(self, None, temperature, None, labels, uniforms=uniforms)

    def get_config(self):
        return dict(
            super().get_config(),
            **self._trunk_config(),
            class_dropout=self.class_dropout,
        )


def keep_masked(step, steps, length, unknown):
    """How many codes of each grid stay masked after sampling step `step` (0-based) of `steps`
    (int32 [N]), given `unknown` int32 [N], the codes masked before the step: google-research/maskgit's
    max(1, min(unknown - 1, floor(gamma((s + 1) / steps) T))), so that every step reveals at least
    one code and leaves one for the next, and 0 after the last step (which reveals all)."""
    ratio = tf.cast(step + 1, tf.float32) / tf.cast(steps, tf.float32)
    # + 1e-3: where gamma T is a whole number (cos(pi / 3) T), float32 lands just below it.
    count = tf.cast(tf.floor(cosine_schedule(ratio) * length + 1e-3), tf.int32)
    count = tf.minimum(tf.maximum(1, tf.minimum(unknown - 1, count)), length - 1)  # (a 1-code grid: 0)
    return tf.where(step + 1 >= steps, tf.zeros_like(count), count)


def sample_codes_graph(
    prior,
    num_samples,
    temperature,
    seed,
    labels=None,
    top_k=None,
    steps=8,
    choice_temperature=4.5,
    guidance=0.0,
    uniforms=None,
):
    """MaskGIT's parallel decoding as TF ops (see the module): num_samples, steps int32 scalars;
    temperature (> 0), choice_temperature (>= 0), guidance (>= 0) float32 scalars; seed int32
    scalar; labels int32 [num_samples] in [0, num_classes) or None; top_k a Python int or None.
    `uniforms` (the TFLite generator's): float32 [N, steps, 2, h*w] replacing the seeded draws,
    ``[:, s, 0]`` the picks and ``[:, s, 1]`` the choice noise of step s (num_samples, steps and
    seed are then taken from it). Returns int32 codes [num_samples, h, w]."""
    h, w = prior.latent_shape
    length = h * w
    # A guidance known to be 0 (a Python number: the signatures') skips the unconditional pass.
    guided = not (isinstance(guidance, (int, float)) and guidance == 0)
    if uniforms is not None:
        num_samples, steps, seed = tf.shape(uniforms)[0], tf.shape(uniforms)[1], 0
    num_samples = tf.convert_to_tensor(num_samples, tf.int32)
    steps = tf.convert_to_tensor(steps, tf.int32)
    temperature = tf.convert_to_tensor(temperature, tf.float32)
    choice_temperature = tf.convert_to_tensor(choice_temperature, tf.float32)
    guidance = tf.convert_to_tensor(guidance, tf.float32)
    seed = tf.cast(seed, tf.int32)
    if uniforms is None:  # (a TFLite generator has no Assert op: its input shapes are its checks)
        num_samples = checks.require(num_samples, num_samples > 0, "num_samples must be > 0, got", num_samples)
        steps = checks.require(steps, steps > 0, "steps must be > 0, got", steps)
        temperature = checks.require(temperature, temperature > 0, "temperature must be > 0, got", temperature)
        guidance = checks.require(guidance, guidance >= 0, "guidance must be >= 0, got", guidance)
    if top_k is not None and (not isinstance(top_k, int) or not 1 <= top_k <= prior.num_embeddings):
        raise ValueError(f"top_k must be in [1, num_embeddings] ({prior.num_embeddings}), got {top_k!r}.")
    labels = prior.check_labels(labels, num_samples)
    null = tf.fill(tf.reshape(num_samples, [1]), prior.null_class) if labels is not None else None

    def draw(step, which):  # [N, T] uniforms: the picks (0) or the choice noise (1) of `step`
        if uniforms is not None:
            return uniforms[:, step, which]
        return hash_random.uniform(seed, step if which == 0 else -1 - step, tf.stack([num_samples, length]))

    def logits_of(codes, mask):
        logits = prior(codes, mask, labels)
        if labels is None or not guided:
            return logits
        unconditional = prior(codes, mask, null)
        return logits + guidance * (logits - unconditional)

    def body(step, codes, mask):
        logits = tf.reshape(logits_of(codes, mask), [-1, prior.num_embeddings])  # [N T, K]
        picked = tf.reshape(pick_at(logits, temperature, tf.reshape(draw(step, 0), [-1]), top_k), [-1, length])
        flat_mask = tf.reshape(mask, [-1, length])
        flat_codes = tf.where(flat_mask, picked, tf.reshape(codes, [-1, length]))
        log_probs = tf.reshape(tf.nn.log_softmax(logits / temperature), [-1, length, prior.num_embeddings])
        chosen = tf.one_hot(flat_codes, prior.num_embeddings, dtype=log_probs.dtype)
        confidence = tf.reduce_sum(log_probs * chosen, axis=-1)
        uniform = tf.maximum(draw(step, 1), 1e-20)
        anneal = choice_temperature * (1.0 - tf.cast(step + 1, tf.float32) / tf.cast(steps, tf.float32))
        confidence += anneal * -tf.math.log(-tf.math.log(uniform))
        confidence = tf.where(flat_mask, confidence, float("inf"))  # codes fixed earlier stay fixed
        # The `keep` least confident stay masked: those below the (keep + 1)-th smallest (a sort
        # by top_k, a TFLite builtin; no argsort there).
        ascending = -tf.math.top_k(-confidence, k=length).values
        keep = keep_masked(step, steps, length, tf.reduce_sum(tf.cast(flat_mask, tf.int32), axis=1))
        threshold = tf.gather(ascending, keep, axis=1, batch_dims=1)[:, None]
        new_mask = confidence < threshold
        shape = [-1, h, w]
        return step + 1, tf.reshape(flat_codes, shape), tf.reshape(new_mask, shape)

    codes = tf.zeros(tf.stack([num_samples, h, w]), tf.int32)
    mask = tf.ones(tf.stack([num_samples, h, w]), tf.bool)
    _, codes, _ = tf.while_loop(
        lambda s, *_: s < steps,
        body,
        [tf.constant(0), tf.ensure_shape(codes, [None, h, w]), tf.ensure_shape(mask, [None, h, w])],
    )
    return codes


@register_prior_family("maskgit")
class MaskGITFamily(PriorFamily):
    """MaskGIT's bidirectional transformer, sized from the prior config as the causal one."""

    cls = MaskGITPrior
    title = "MaskGIT"

    def build(self, network: dict, meta: dict):
        return self.cls(**transformer_arguments(network, meta))
