"""Gated PixelCNN prior over VQ-VAE codes (its layers: `vqvae_tf.layers.masked_conv`).

"Conditional Image Generation with PixelCNN Decoders", van den Oord et al. 2016
(arXiv:1606.05328): a vertical stack (the rows above) and a horizontal stack (the current row, to
the left) remove the blind spot of plain masked stacks; gated activations tanh(a) * sigmoid(b)
(eq. 2); residual connections in the horizontal stack; an optional class embedding added in every
gated block (conditional PixelCNN, eq. 4). The VQ-VAE paper (arXiv:1711.00937, section 3.3)
fits this prior to the codes of a trained VQ-VAE.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from vqvae_tf.data import codes as codes_format
from vqvae_tf.layers import SERIALIZATION_PACKAGE
from vqvae_tf.layers.attention import CausalSelfAttention
from vqvae_tf.layers.encoder_decoder import DOWNSAMPLE_FACTORS, Decoder
from vqvae_tf.layers.masked_conv import GatedBlock, shift_down
from vqvae_tf.models import presets
from vqvae_tf.models.priors.base import AutoregressivePrior
from vqvae_tf.models.priors.inputs import PriorInputs
from vqvae_tf.models.priors.pixelcnn_sampling import sample_codes_from_uniforms_graph, sample_codes_graph
from vqvae_tf.models.priors.registry import NETWORK_FIELDS, PriorFamily, register_prior_family
from vqvae_tf.utils import checks, progress


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class PixelCNN(AutoregressivePrior, PriorInputs, presets.PresetMixin, keras.Model):
    """Gated PixelCNN over code grids: codes int32 [B,h,w] (+ labels [B]) -> logits [B,h,w,K].

    Args:
      num_embeddings: K, the number of codes (the VQ-VAE's codebook size).
      latent_shape: (h, w) of the code grid.
      num_filters: channels of the stacks.
      num_layers: gated blocks. The stack must see every earlier position of the grid, which
        takes ``num_layers * (kernel_size // 2) >= max(h - 2, w - 1)`` (`layers_to_reach`); fewer
        raise ValueError. None: exactly `layers_to_reach(latent_shape, kernel_size)`.
      kernel_size: odd.
      num_classes: 0 for an unconditional prior, else the number of class labels.
      dropout: dropout rate inside the gated blocks.
      depth: codes per position of a residual quantizer, laid out side by side along the row
        (`VQVAE.prior_grid_shape`: column j holds depth j % depth), so that the raster order visits
        the depths of a position in order, as PixelCNN orders the colour channels of a pixel.
        Each depth has its own code embedding and output head (K codes each). 1: plain codes.
      condition_shape, condition_embeddings: spatial conditioning on a coarser grid of codes
        (VQ-VAE-2's bottom prior on its top codes): codes int32 ``[B, *condition_shape]`` in
        [0, condition_embeddings) go through a conditioning stack (embedding, 3x3 convolution,
        residual blocks, strided transposed convolutions up to `latent_shape`: 2x, 4x or 8x) whose
        features every gated block adds through a 1x1 convolution. The whole conditioning grid is
        known when sampling, so every position may see all of it. None: no spatial conditioning.
      attention_blocks, attention_heads: causal multi-head self-attention over the horizontal
        stack after `attention_blocks` of the gated blocks, evenly spaced (VQ-VAE-2's top prior).
        The cached sampler does not cover attention: such a prior samples with the plain one.

    The defaults are the prior the pipeline trains on Fashion-MNIST codes (`configs.PriorConfig`).

    Example:
    >>> prior = PixelCNN(num_embeddings=16, latent_shape=(7, 7), num_filters=8, num_layers=3, kernel_size=5)
    >>> prior(tf.zeros([2, 7, 7], tf.int32)).shape
    TensorShape([2, 7, 7, 16])
    """

    prior_network = "pixelcnn"
    # Its samplers (`AutoregressivePrior`): the cached one of pixelcnn_sampling.
    codes_sampler = staticmethod(sample_codes_graph)
    uniforms_sampler = staticmethod(sample_codes_from_uniforms_graph)

    def __init__(
        self,
        num_embeddings: int,
        latent_shape=(7, 7),
        num_filters: int = 32,
        num_layers: int | None = 8,
        kernel_size: int = 3,
        num_classes: int = 0,
        dropout: float = 0.0,
        depth: int = 1,
        condition_shape=None,
        condition_embeddings: int = 0,
        attention_blocks: int = 0,
        attention_heads: int = 4,
        **kwargs,
    ):
        super().__init__(**kwargs)
        checks.positive_int("num_embeddings", num_embeddings)
        checks.positive_int("depth", depth)
        checks.positive_int("attention_heads", attention_heads)
        if attention_blocks < 0:
            raise ValueError(f"attention_blocks must be >= 0, got {attention_blocks}.")
        if attention_blocks and num_filters % attention_heads:
            raise ValueError(f"num_filters={num_filters} must be divisible by attention_heads={attention_heads}.")
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}.")
        self.validate_stack(num_filters, num_layers, kernel_size, dropout)
        self.latent_shape = self.checked_grid(latent_shape, depth)
        num_layers = self.resolve_layers(self.latent_shape, num_layers, kernel_size)
        if attention_blocks > num_layers:
            raise ValueError(f"attention_blocks={attention_blocks} exceeds the {num_layers} gated blocks.")
        self.condition_shape = self._condition_factor(self.latent_shape, condition_shape, condition_embeddings)
        self.condition_embeddings = int(condition_embeddings) if self.condition_shape else 0
        self.attention_blocks = int(attention_blocks)
        self.attention_heads = int(attention_heads)
        self.depth = int(depth)
        self.num_embeddings = num_embeddings
        self.num_filters = num_filters
        self.num_layers = num_layers
        self.kernel_size = kernel_size
        self.num_classes = num_classes
        self.dropout = dropout
        self.embedding = keras.layers.Embedding(num_embeddings * depth, num_filters, name="code_embedding")
        self.blocks = [
            GatedBlock(
                num_filters,
                kernel_size,
                first=(i == 0),
                num_classes=num_classes,
                dropout=dropout,
                last=(i == num_layers - 1),
                condition_channels=num_filters if self.condition_shape else 0,
                name=f"gated_{i}",
            )
            for i in range(num_layers)
        ]
        self.conditioning_stack = None
        if self.condition_shape:
            factor = self.latent_shape[0] // self.condition_shape[0]
            self.condition_embedding = keras.layers.Embedding(
                self.condition_embeddings, num_filters, name="condition_embedding"
            )
            self.conditioning_stack = Decoder(
                num_filters, num_filters, max(num_filters // 2, 1), 2, factor, name="conditioning_stack"
            )
        # Attention after the blocks at these indices (evenly spaced, the last one last).
        after = sorted({num_layers - 1 - round(j * num_layers / attention_blocks) for j in range(attention_blocks)})
        self.attention = [CausalSelfAttention(self.latent_shape, attention_heads, name=f"attention_{i}") for i in after]
        self._attention_after = tuple(after)  # block indices, in the order of self.attention
        self.head_hidden = keras.layers.Conv2D(2 * num_filters, 1, activation="relu", name="head_hidden")
        self.head_logits = keras.layers.Conv2D(num_embeddings * depth, 1, name="head_logits")
        self._make_trackers()
        self._build_all()

    @staticmethod
    def layers_to_reach(latent_shape, kernel_size: int) -> int:
        """The fewest gated blocks whose prediction at every position depends on every earlier
        position (raster order) of an (h, w) grid. Each block widens the vertical stack's view by
        k // 2 rows up and columns either side, and the horizontal stack's by k // 2 columns left;
        the link from the vertical stack adds the row just above. So the row above's far end
        needs L (k // 2) >= w - 1 and the top row L (k // 2) >= h - 2 (tests/test_pixelcnn.py
        checks this bound and its tightness by gradients)."""
        h, w = latent_shape
        p = kernel_size // 2
        return max(1, -(-max(h - 2, w - 1) // p))

    @classmethod
    def resolve_layers(cls, latent_shape, num_layers: int | None, kernel_size: int) -> int:
        """`num_layers`, or the `layers_to_reach` for None; ValueError (naming the grid, the
        layers and the kernel) when the stack would not see every earlier position."""
        needed = cls.layers_to_reach(latent_shape, kernel_size)
        if num_layers is None:
            return needed
        if num_layers < needed:
            h, w = latent_shape
            raise ValueError(
                f"A PixelCNN of num_layers={num_layers} with kernel_size={kernel_size} cannot see every "
                f"earlier position of a {h}x{w} code grid: it needs num_layers >= {needed} for that kernel "
                f"(num_layers * (kernel_size // 2) >= max(h - 2, w - 1)). Use more layers, a larger "
                "kernel_size, or num_layers=None to size the stack from the grid."
            )
        return num_layers

    @staticmethod
    def _condition_factor(latent_shape, condition_shape, condition_embeddings):
        """The checked (hc, wc) of spatial conditioning codes, or None."""
        if condition_shape is None:
            return None
        hc, wc = (int(s) for s in condition_shape)
        checks.positive_int("condition_embeddings", condition_embeddings)
        h, w = latent_shape
        factor = h // hc if hc > 0 and h % hc == 0 else 0
        if factor not in DOWNSAMPLE_FACTORS or w != wc * factor:
            raise ValueError(
                f"condition_shape {(hc, wc)} must be latent_shape {tuple(latent_shape)} divided by one of "
                f"{DOWNSAMPLE_FACTORS} in both directions."
            )
        return (hc, wc)

    @staticmethod
    def validate_stack(num_filters, num_layers, kernel_size, dropout) -> None:
        """Raises ValueError naming the first bad argument of the gated stack (num_layers may
        be None: sized from the grid)."""
        checks.positive_int("num_filters", num_filters)
        if num_layers is not None:
            checks.positive_int("num_layers", num_layers)
        if kernel_size % 2 == 0 or kernel_size < 3:
            raise ValueError(f"kernel_size must be odd and >= 3, got {kernel_size}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")

    def _build_all(self):
        h, w = self.latent_shape
        shape = (None, h, w, self.num_filters)
        self.embedding.build((None, h, w))
        for block in self.blocks:
            block.build(shape)
        self.head_hidden.build(shape)
        self.head_logits.build(shape[:-1] + (2 * self.num_filters,))
        for layer in self.attention:
            layer.build(shape)
        if self.conditioning_stack is not None:
            hc, wc = self.condition_shape
            self.condition_embedding.build((None, hc, wc))
            self.conditioning_stack(keras.KerasTensor((None, hc, wc, self.num_filters)))
        self.built = True

    def conditioning(self, labels=None, condition=None):
        """Per gated block, what it adds before its gates: (vertical, horizontal) halves (0.0, or
        ``[B,1,1,2F]`` for the class, ``[B,h,w,2F]`` with spatial conditioning). Checked inputs."""
        features = None
        if self.conditioning_stack is not None:
            features = self.conditioning_stack(self.condition_embedding(condition))
        return [block.conditioning(labels, features) for block in self.blocks]

    @property
    def has_attention(self) -> bool:
        return bool(self.attention)

    # ---------------------------------------------------------------- forward

    def vertical_links(self, x, conditioning):
        """Embedded codes [B,h,w,F] and `conditioning` -> per block, shift_down(v_pre) [B,h,w,2F]:
        everything the horizontal stack of row i needs from the rows above."""
        links, v = [], x
        for block, (cond_v, _) in zip(self.blocks, conditioning):
            v_pre, v = block.vertical(v, cond_v)
            links.append(shift_down(v_pre))
        return links

    def horizontal_logits(self, h, links, conditioning, training=False):
        """Embedded codes [B,h,w,F], the blocks' `links` and `conditioning` -> logits [B,h,w,K] (float32)."""
        for i, (block, link, (_, cond_h)) in enumerate(zip(self.blocks, links, conditioning)):
            h = block.horizontal(h, link, cond_h, training)
            if i in self._attention_after:
                h = self.attention[self._attention_after.index(i)](h)
        return self.head(h)

    def embed(self, codes, column=None):
        """Codes int32 ``[..., w]`` of whole rows -> embeddings ``[..., w, F]`` (each depth its own
        table); with `column`, ``[..., 1]`` codes of that one grid column."""
        if self.depth > 1:
            columns = tf.range(tf.shape(codes)[-1]) if column is None else column
            codes = codes + (columns % self.depth) * self.num_embeddings
        return self.embedding(codes)

    def head(self, h, column=None):
        """Output of the last horizontal stack -> logits float32 [..., K]: `h` [B, r, w, F] of whole
        rows, or, with `column` (the grid column of a single position), [B, 1, 1, F]."""
        return self.select_depth(tf.cast(self.head_logits(self.head_hidden(tf.nn.relu(h))), tf.float32), column)

    def logits_from_embeddings(self, x, labels=None, training=False, condition=None):
        """Embedded codes, checked labels and condition -> logits float32 [B,h,w,K]."""
        conditioning = self.conditioning(labels, condition)
        return self.horizontal_logits(x, self.vertical_links(x, conditioning), conditioning, training)

    def call(self, codes, labels=None, training=False, condition=None):
        if isinstance(codes, (tuple, list)):  # Keras' multi-input form, e.g. predict((codes, labels))
            codes, labels, *rest = codes
            condition = rest[0] if rest else condition
        codes = self.check_codes(codes)
        labels = self.check_labels(labels, tf.shape(codes)[0])
        condition = self.check_condition(condition, tf.shape(codes)[0])
        return self.logits_from_embeddings(self.embed(codes), labels, training, condition)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_embeddings=self.num_embeddings,
            latent_shape=list(self.latent_shape),
            num_filters=self.num_filters,
            num_layers=self.num_layers,
            kernel_size=self.kernel_size,
            num_classes=self.num_classes,
            dropout=self.dropout,
            depth=self.depth,
            condition_shape=list(self.condition_shape) if self.condition_shape else None,
            condition_embeddings=self.condition_embeddings,
            attention_blocks=self.attention_blocks,
            attention_heads=self.attention_heads,
        )
        return config


def size_to_grids(config, grids: dict, fit: bool) -> None:
    """A PixelCNN stack for the code `grids` ({name: (h, w)}) of a prior config: where `fit`, a
    `num_layers` too small to see every earlier position of a grid (a larger image than the
    config's, residual VQ's wider grid) becomes None (sized from the grid), and the log says so;
    then a stack that still cannot see a grid is refused before training (ValueError)."""
    for h, w in (tuple(grid) for grid in grids.values()):
        if (
            fit
            and config.num_layers is not None
            and config.num_layers < PixelCNN.layers_to_reach((h, w), config.kernel_size)
        ):
            progress.log(
                f"The prior models a {h}x{w} code grid: {config.num_layers} gated blocks of kernel "
                f"{config.kernel_size} cannot see all of it, so its stack is sized from the grid."
            )
            config.num_layers = None
    for grid in grids.values():
        PixelCNN.resolve_layers(tuple(grid), config.num_layers, config.kernel_size)


@register_prior_family("pixelcnn")
class PixelCNNFamily(PriorFamily):
    """A gated PixelCNN over one code grid (residual VQ's depth side by side: ``depth``)."""

    cls = PixelCNN
    title = "gated PixelCNN"
    network_fields = NETWORK_FIELDS

    def build(self, network: dict, meta: dict):
        grid = tuple(codes_format.grid_shapes(meta)["codes"])
        fields = {k: v for k, v in network.items() if k != "prior"}
        return PixelCNN(latent_shape=grid, depth=meta.get("depth", 1), **fields)

    def fit_config(self, config, grids: dict, fit: bool) -> None:
        size_to_grids(config, grids, fit)
