"""VQ-VAE-2's prior: p(top codes) p(bottom codes | top codes) (arXiv:1906.00446, section 3.3).

Two gated PixelCNNs (`vqvae_tf.models.priors.pixelcnn.PixelCNN`): the top one over the top codes, with
optional causal self-attention blocks (the paper's top prior has them), or instead a causal
transformer (`top_prior="transformer"`, `--prior=transformer`); the bottom one over the
bottom codes, spatially conditioned on the top codes through a conditioning stack at the bottom
grid's resolution. That stack is local, as rosinality's PixelSNAIL conditioning: the first bottom
position sees the 4 x 4 window of top codes at its corner, whatever the grid size (tested on every
vqvae2 config's grids), and a later one also, through the causal stack, some of what the earlier
bottom positions saw; it does not see the whole top grid. We keep it local: the top codes are
sampled whole before the bottom, and a stack sized to reach the whole top grid from every position
would cost as much as the bottom prior itself. Both may be class-conditional. Trained together on exported codes (the
two log-likelihoods add up; their parameters are disjoint, so this is two separate fits in one
loop); sampled top first, then bottom, in one graph (`sample_grids_graph`).
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from vqvae_tf.data import codes as codes_format
from vqvae_tf.layers import SERIALIZATION_PACKAGE
from vqvae_tf.layers.likelihoods import LOG2
from vqvae_tf.layers.transformer import sized_from_prior_config
from vqvae_tf.models import presets
from vqvae_tf.models.code_grids import GRID_NAMES, LEVELS
from vqvae_tf.models.priors import registry, transformer
from vqvae_tf.models.priors.base import codes_and_labels
from vqvae_tf.models.priors.pixelcnn import PixelCNN, size_to_grids
from vqvae_tf.models.priors.pixelcnn_sampling import sample_codes_graph
from vqvae_tf.models.priors.registry import NETWORK_FIELDS, PriorFamily, register_prior_family
from vqvae_tf.models.priors.transformer import TransformerPrior
from vqvae_tf.utils import checks, distribute

METRIC_KEYS = ("loss", "bits_per_code", "bits_per_code_top", "bits_per_code_bottom")
# The top level's network: a gated PixelCNN (the paper's, with optional attention) or a causal
# transformer (`TransformerPrior`: width num_filters, num_layers blocks or 4). MaskGIT has no
# exact likelihood, which this prior's log p(top) + log p(bottom | top) needs.
TOP_PRIORS = ("pixelcnn", "transformer")


def per_level(value, name: str) -> tuple:
    """`value` for both levels: a pair (top, bottom) as given, or one value for both."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} per level must be a pair (top, bottom), got {value!r}.")
        return tuple(value)
    return (value, value)


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class HierarchicalPrior(presets.PresetMixin, keras.Model):
    """p(codes_top) p(codes_bottom | codes_top) over a `VQVAE2`'s codes.

    Args:
      num_embeddings: K of both levels.
      top_shape, bottom_shape: the code grids (`VQVAE2.code_grids`); bottom = top x 2, 4 or 8.
      num_filters, num_layers, kernel_size, dropout: of both PixelCNNs (num_layers None: each
        sized to see its whole grid, `PixelCNN.layers_to_reach`).
      num_classes: 0, or class-conditional at both levels.
      attention_blocks, attention_heads: causal self-attention in the top prior (0: none).
      top_prior: "pixelcnn" or "transformer" (`TOP_PRIORS`); the bottom is always the PixelCNN.

    Example:
    >>> prior = HierarchicalPrior(16, (4, 4), (8, 8), num_filters=8, num_layers=None, kernel_size=5)
    >>> lp = prior.log_prob(tf.zeros([2, 4, 4], tf.int32), tf.zeros([2, 8, 8], tf.int32))
    """

    exact_likelihood = True
    top_priors = TOP_PRIORS

    def __init__(
        self,
        num_embeddings: int,
        top_shape=(8, 8),
        bottom_shape=(16, 16),
        num_filters: int = 32,
        num_layers: int | None = None,
        kernel_size: int = 3,
        num_classes: int = 0,
        dropout: float = 0.0,
        attention_blocks: int = 0,
        attention_heads: int = 4,
        top_prior: str = "pixelcnn",
        **kwargs,
    ):
        super().__init__(**kwargs)
        checks.one_of("top_prior", top_prior, TOP_PRIORS)
        common = dict(
            num_filters=num_filters,
            num_layers=num_layers,
            kernel_size=kernel_size,
            num_classes=num_classes,
            dropout=dropout,
        )
        self.top_prior = top_prior
        if top_prior == "transformer":
            if attention_blocks:
                raise ValueError(
                    "attention_blocks is the PixelCNN top prior's; a transformer top prior is all attention."
                )
            self.top = TransformerPrior(
                num_embeddings,
                top_shape,
                **sized_from_prior_config(num_filters, num_layers),
                dropout=dropout,
                num_classes=num_classes,
                name="top_prior",
            )
        else:
            self.top = PixelCNN(
                num_embeddings,
                top_shape,
                attention_blocks=attention_blocks,
                attention_heads=attention_heads,
                name="top_prior",
                **common,
            )
        self.bottom = PixelCNN(
            num_embeddings,
            bottom_shape,
            condition_shape=top_shape,
            condition_embeddings=num_embeddings,
            name="bottom_prior",
            **common,
        )
        self.num_embeddings = int(num_embeddings)
        self.num_classes = int(num_classes)
        self._config = dict(
            common,
            num_embeddings=self.num_embeddings,
            top_shape=list(self.top.latent_shape),
            bottom_shape=list(self.bottom.latent_shape),
            attention_blocks=attention_blocks,
            attention_heads=attention_heads,
            top_prior=top_prior,
        )
        self._trackers = {k: keras.metrics.Mean(name=k) for k in METRIC_KEYS}
        self.built = True

    @property
    def prior_network(self) -> str:
        """The `PriorConfig.prior` that made it: its top level's network."""
        return self.top_prior

    @property
    def grid_shapes(self) -> dict:
        return dict(zip(GRID_NAMES, (self.top.latent_shape, self.bottom.latent_shape)))

    @property
    def num_codes(self) -> int:
        """Codes per image, both levels."""
        return sum(math.prod(s) for s in self.grid_shapes.values())

    def check_labels(self, labels, batch_size=None):
        return self.top.check_labels(labels, batch_size)

    # ---------------------------------------------------------------- likelihood

    def call(self, grids, labels=None, training=False):
        """{"codes_top", "codes_bottom"} (+ labels) -> {"codes_top": logits, "codes_bottom": logits}."""
        top = self.top(grids["codes_top"], labels, training=training)
        bottom = self.bottom(grids["codes_bottom"], labels, training=training, condition=grids["codes_top"])
        return {"codes_top": top, "codes_bottom": bottom}

    def log_prob_levels(self, codes_top, codes_bottom, labels=None):
        """(log p(top), log p(bottom | top)) in nats, float32 [B] each."""
        labels = None if labels is None else tf.convert_to_tensor(labels)
        return self.top.log_prob(codes_top, labels), self.bottom.log_prob(codes_bottom, labels, condition=codes_top)

    def log_prob(self, codes_top, codes_bottom, labels=None):
        """log p(codes_top, codes_bottom) in nats, float32 [B]."""
        top, bottom = self.log_prob_levels(codes_top, codes_bottom, labels)
        return top + bottom

    def log_prob_grids(self, grids: dict, labels=None):
        return self.log_prob(grids["codes_top"], grids["codes_bottom"], labels)

    def bits_per_code(self, log_prob):
        """`log_prob` of both grids (nats) as bits per code over both levels."""
        return -log_prob / (self.num_codes * LOG2)

    # ---------------------------------------------------------------- sampling

    def sample_grids_graph(self, num_samples, temperature, seed, labels=None, top_k=None, fast=True) -> dict:
        """Top codes, then bottom codes given them, as TF ops (one graph). `temperature`, `seed`
        and `top_k` are one value for both levels or a (top, bottom) pair; one seed s samples the
        bottom level with s + 1. Returns {"codes_top": int32 [N,ht,wt], "codes_bottom": int32 [N,hb,wb]}."""
        temperatures = per_level(temperature, "temperature")
        top_ks = per_level(top_k, "top_k")
        seeds = seed if isinstance(seed, (tuple, list)) else (seed, tf.cast(seed, tf.int32) + 1)
        seeds = per_level(seeds, "seed")
        sample_top = transformer.sample_codes_graph if self.top_prior == "transformer" else sample_codes_graph
        top = sample_top(self.top, num_samples, temperatures[0], seeds[0], labels, top_ks[0], fast)
        bottom = sample_codes_graph(
            self.bottom, num_samples, temperatures[1], seeds[1], labels, top_ks[1], fast, condition=top
        )
        return {"codes_top": top, "codes_bottom": bottom}

    # ---------------------------------------------------------------- training

    @property
    def metrics(self):
        return list(self._trackers.values())

    def _nll(self, data, training):
        """Per example, nats per code of each level: (top [B], bottom [B])."""
        grids, labels = codes_and_labels(data, self.num_classes)
        logits = self(grids, labels, training=training)
        return tuple(
            tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(
                    labels=tf.cast(grids[name], tf.int32), logits=logits[name]
                ),
                axis=[1, 2],
            )
            for name in GRID_NAMES
        )

    def _joint(self, top, bottom):
        """Nats per code over both levels, from each level's per-code means."""
        sizes = [math.prod(s) for s in self.grid_shapes.values()]
        return (top * sizes[0] + bottom * sizes[1]) / float(sum(sizes))

    def _track(self, top, bottom):
        joint = self._joint(top, bottom)
        values = {
            "loss": joint,
            "bits_per_code": joint / LOG2,
            **{f"bits_per_code_{level}": nll / LOG2 for level, nll in zip(LEVELS, (top, bottom))},
        }
        for key, tracker in self._trackers.items():
            tracker.update_state(values[key])
        return {k: t.result() for k, t in self._trackers.items()}

    def train_step(self, data):
        with tf.GradientTape() as tape:
            top, bottom = self._nll(data, training=True)
            loss = tf.reduce_mean(self._joint(top, bottom))
            scaled = self.optimizer.scale_loss(distribute.replica_scaled(loss))
        variables = self.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(scaled, variables), variables))
        return self._track(top, bottom)

    def test_step(self, data):
        return self._track(*self._nll(data, training=False))

    # ---------------------------------------------------------------- saving

    def get_config(self):
        return dict(super().get_config(), **self._config)


@register_prior_family("hierarchical")
class HierarchicalFamily(PriorFamily):
    """VQ-VAE-2's top prior and bottom prior conditioned on the top codes: chosen by the codes (a
    `VQVAE2`'s `prior_family`); `--prior` names its top level's network (`TOP_PRIORS`); the bottom
    PixelCNN's stack is sized to its grid."""

    cls = HierarchicalPrior
    title = "hierarchical prior"
    network_fields = NETWORK_FIELDS
    one_grid = False

    def build(self, network: dict, meta: dict):
        grids = {name: tuple(shape) for name, shape in codes_format.grid_shapes(meta).items()}
        fields = {k: v for k, v in network.items() if k != "prior"}
        return HierarchicalPrior(
            top_shape=grids["codes_top"],
            bottom_shape=grids["codes_bottom"],
            top_prior=network.get("prior", "pixelcnn"),
            **fields,
        )

    def describe(self, network: str) -> str:
        if network == "pixelcnn":
            return "top and bottom gated PixelCNNs"
        return "causal transformer (top), gated PixelCNN (bottom)"

    def for_network(self, network: str):
        if network not in TOP_PRIORS:
            top = registry.get(network)
            why = (
                ""
                if top.cls.exact_likelihood
                else f": {top.title} has no exact likelihood, which log p(top) + log p(bottom | top) needs"
            )
            raise ValueError(
                f"The codes are VQ-VAE-2's ({', '.join(GRID_NAMES)}): their prior's top level is one of "
                f"{', '.join(TOP_PRIORS)}, not {network!r}{why}."
            )
        return self

    def fit_config(self, config, grids: dict, fit: bool) -> None:
        size_to_grids(config, grids, fit)  # (the bottom PixelCNN; a transformer top then has 4 blocks)
