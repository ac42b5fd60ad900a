"""The VQ-VAE model: encoder -> vector quantiser -> decoder, with its own train/test steps.

arXiv:1711.00937, eq. 3: L = log p(x|z_q(x)) + ||sg[z_e(x)] - e||^2 + beta ||z_e(x) - sg[e]||^2.
The reconstruction term is the MSE divided by the training-set pixel variance (as the paper's
and Sonnet's CIFAR-10 results), or, with ``likelihood="logistic"``, the negative log-likelihood per
dimension (nats) of a discretized logistic, which makes p(x|z) a proper discrete distribution.
"""

from __future__ import annotations

import inspect

import keras
import tensorflow as tf

from vqvae_tf.layers import SERIALIZATION_PACKAGE, networks
from vqvae_tf.layers.quantizers import build, option_fields
from vqvae_tf.models.autoencoders.base import LIKELIHOODS as LIKELIHOODS  # re-exported: the models' likelihoods
from vqvae_tf.models.autoencoders.base import RESTARTS_KEY, ImageAutoencoder, unless_empty
from vqvae_tf.models.autoencoders.registry import register_autoencoder

LOSS_KEYS = ("loss", "reconstruction_loss", "codebook_loss", "commitment_loss", "perplexity")
# Logged besides LOSS_KEYS by a model whose quantizer has an entropy penalty (LFQ, BSQ).
ENTROPY_KEY = "entropy_loss"
# Constructor arguments that shape the variables: a checkpoint made with one value cannot be
# restored into a model built with another (the quantizers' own such options are added below).
ARCHITECTURE_ARGS = (
    "image_shape",
    "num_embeddings",
    "embedding_dim",
    "num_hiddens",
    "num_residual_hiddens",
    "num_residual_layers",
    "downsample",
    "network",
    "network_options",
    "quantizer",
    *(field for field, option in option_fields().items() if option.architecture),
    "likelihood",
)


@register_autoencoder("vqvae")
@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class VQVAE(ImageAutoencoder):
    """VQ-VAE: `encode(images) -> codes`, `decode(codes) -> images`, `call(images) -> reconstructions`.

    Args:
      image_shape: (H, W, C) of the images.
      num_embeddings, embedding_dim: K and D of the quantizer (fixed by some quantizers' options:
        FSQ's levels, LFQ's and BSQ's D bits make K = 2^D; a config derives them).
      num_hiddens, num_residual_hiddens, num_residual_layers, downsample: of encoder/decoder
        (the "vqvae" network's widths; every network's image-to-grid factor is `downsample`).
      network: the encoder/decoder by registered name (`vqvae_tf.layers.networks.names()`):
        "vqvae" (the paper's, the default) or "taming" (VQGAN's and diffusers' VQModel's GroupNorm
        ResNet with attention: the network of the converted pretrained tokenizers).
      network_options: that network's options (None: its defaults; the "taming" network's are
        `vqvae_tf.layers.taming.DEFAULTS`'s keys, e.g. ``block_out_channels``).
      quantizer: a registered name (`vqvae_tf.layers.quantizers.registry.names()`: "vq", "ema",
        "fsq", "rvq", "lfq", "bsq", "simvq", "ibq"), or a `Quantizer` instance (e.g. of a user's own class; K and
        D are then its own, and it is saved with the model: register its class with Keras).
      likelihood: "mse" or "logistic".
      data_variance: training-set pixel variance (normaliser of the MSE loss).
      seed: seed of the quantiser's random draws.
      **kwargs: the quantizer's options by field name (`option_fields()`: ``commitment_cost``,
        ``decay``, ``dead_code_threshold``, ``kmeans_init``, ``distance``, ``gradient``,
        ``fsq_levels``, ``num_quantizers``, ``quantizer_dropout``, ``entropy_weight``, ...; an
        option of another quantizer than the named one must keep its default), then Keras' own.

    The defaults are the `fashion_mnist` config's network. These arguments and the registered
    options are the model's fields: `get_config` and `vqvae_tf.configs.VQVAEConfig` derive from them.
    Images are float32 ``[B,H,W,C]`` in [0,1]; codes are int32 ``[B, H/downsample, W/downsample]``
    (``codes_shape`` per image; residual VQ adds a last axis of its depth).

    Example:
    >>> from vqvae_tf import VQVAE, get_config
    >>> model = get_config("tiny").build()                 # untrained, from a named config
    >>> model = VQVAE.from_preset("fashion_mnist")        # pretrained (a name or a directory)
    >>> model.encode(tf.zeros([2, 28, 28, 1])).shape
    TensorShape([2, 7, 7])
    >>> VQVAE(quantizer="lfq", embedding_dim=8, num_embeddings=256, entropy_weight=0.1)  # K = 2^8
    """

    title = "VQ-VAE"

    takes_quantizer_options = True  # the registered options are keyword arguments (and config fields)

    def __init__(
        self,
        image_shape=(28, 28, 1),
        num_embeddings: int = 256,
        embedding_dim: int = 32,
        num_hiddens: int = 64,
        num_residual_hiddens: int = 32,
        num_residual_layers: int = 2,
        downsample: int = 4,
        network: str = "vqvae",
        network_options: dict | None = None,
        quantizer="ema",
        likelihood: str = "mse",
        data_variance: float = 1.0,
        seed: int = 0,
        **kwargs,
    ):
        fields = option_fields()
        options = {name: kwargs.pop(name) for name in list(kwargs) if name in fields}
        super().__init__(**kwargs)
        arguments = {name: value for name, value in locals().items() if name in _ARGUMENTS}
        arguments["network_options"] = networks.get(network).canonical_options(network_options)
        layer = build.as_layer(quantizer, options)
        if layer is None:  # by name: every registered option is a field of the model
            arguments.update(build.option_values(options))
        else:
            arguments.update(num_embeddings=layer.num_embeddings, embedding_dim=layer.embedding_dim)
        # `self.quantizer` is the layer; its type string is `quantizer_type`.
        self._set_arguments(arguments, {"quantizer": "quantizer_type"})
        if layer is None:
            layer = build.named(arguments, seed)
        else:
            self.quantizer_type = getattr(type(layer), "registered_name", type(layer).__name__)
            self._arguments["quantizer"] = keras.saving.serialize_keras_object(layer)
        h, w, channels = self.image_shape
        self.latent_shape = (h // downsample, w // downsample)

        out_channels = channels * (2 if likelihood == "logistic" else 1)
        self.encoder, self.decoder = networks.get(network).build(
            arguments, self.network_options, self.embedding_dim, out_channels
        )
        self.quantizer = layer
        keys = LOSS_KEYS + ((ENTROPY_KEY,) if _has_entropy(layer) else ())
        self._trackers = {k: keras.metrics.Mean(name=k) for k in keys}
        self._restarts = keras.metrics.Mean(name=RESTARTS_KEY)
        # The input shape is known, so all state is created now (as in functional backbones):
        # the model saves and checkpoints completely even if only train_step ever ran.
        self.build()

    @staticmethod
    def validate_arguments(arguments: dict) -> None:
        """Raises ValueError naming the first bad network argument in `arguments` (the network's,
        then the quantizer's, which its layer validates)."""
        ImageAutoencoder.validate_network(arguments, arguments["downsample"], f"downsample={arguments['downsample']}")
        network = networks.get(arguments.get("network", "vqvae"))
        network.validate(arguments, network.canonical_options(arguments.get("network_options")))
        if build.as_layer(arguments["quantizer"]) is None:
            build.named(arguments)

    @staticmethod
    def codebook_geometry(arguments: dict) -> tuple:
        """(K, D, codes per position) of a model made with `arguments` (its quantizer by name and
        its options, or a quantizer config): what its code grids and a config's K and D follow."""
        return build.geometry(arguments)

    @classmethod
    def prior_grid_shapes(cls, arguments: dict) -> dict:
        """{grid name: shape} a prior of a model made with `arguments` models (`prior_grids`)."""
        h, w, _ = arguments["image_shape"]
        downsample = arguments["downsample"]
        depth = cls.codebook_geometry(arguments)[2]
        return {"codes": (h // downsample, w // downsample * depth)}

    # ------------------------------------------------------------------ code layouts

    @property
    def codes_per_position(self) -> int:
        """Codes per grid position: 1, or the depth of a residual quantizer."""
        return self.quantizer.codes_per_position

    @property
    def codes_shape(self) -> tuple:
        """The codes of one image: (h, w), or (h, w, depth) for residual VQ."""
        q = self.codes_per_position
        return self.latent_shape if q == 1 else (*self.latent_shape, q)

    @property
    def prior_grid_shape(self) -> tuple:
        """The grid a PixelCNN prior models: (h, w * depth), each position's codes side by side
        in depth order, so that the raster order visits depth within a position (the prior's
        ``depth`` tells it which column holds which depth)."""
        h, w = self.latent_shape
        return (h, w * self.codes_per_position)

    def to_prior_grid(self, codes):
        """codes ``[B, *codes_shape]`` -> ``[B, *prior_grid_shape]`` (identity for one code per position)."""
        return tf.reshape(codes, [-1, *self.prior_grid_shape])

    def from_prior_grid(self, grid):
        """The inverse of `to_prior_grid`."""
        return tf.reshape(grid, [-1, *self.codes_shape])

    @property
    def code_grids(self) -> dict:
        return {"codes": self.codes_shape}

    @property
    def grid_codebooks(self) -> dict:
        return {"codes": (self.num_embeddings, self.codes_per_position)}

    def prior_grids(self) -> dict:
        return {"codes": self.prior_grid_shape}

    def to_prior_grids(self, grids: dict) -> dict:
        return {"codes": self.to_prior_grid(grids["codes"])}

    def from_prior_grids(self, grids: dict) -> dict:
        return {"codes": self.from_prior_grid(grids["codes"])}

    @property
    def quantizers(self) -> dict:
        """{grid name: its quantizer}."""
        return {"codes": self.quantizer}

    def encode_grids(self, images) -> dict:
        return {"codes": self.encode(images)}

    def decode_grids(self, grids: dict):
        return self.decode(grids["codes"])

    def codes_of(self, out: dict) -> dict:
        return {"codes": out["indices"]}

    def frozen_codebooks(self) -> dict:
        return {"codes": tf.constant(self.quantizer.codebook.numpy())}

    def encode_with(self, images, codebooks: dict) -> dict:
        return {"codes": self.quantizer.indices_of(self.encoder_outputs(images), codebooks["codes"])}

    def decode_with(self, grids: dict, codebooks: dict):
        return self.images_from_vectors(self.quantizer.lookup(grids["codes"], codebooks["codes"], check=False))

    # ------------------------------------------------------------------ building blocks

    def build(self, input_shape=None):
        if self.built:
            return
        h, w, c = self.image_shape
        z = self.encoder(keras.KerasTensor((None, h, w, c)))
        if not self.quantizer.built:
            self.quantizer.build(z.shape)
        self.decoder(keras.KerasTensor(z.shape))
        self.built = True

    def freeze_codes(self) -> None:
        """Freezes the encoder and the quantizer (`trainable` False before `compile`): training then
        moves the decoder alone, and the codes of every image, so the priors trained on them, stay
        as they are (fine-tuning a pretrained tokenizer's decoder on your own images)."""
        self.encoder.trainable = False
        self.quantizer.trainable = False

    def _z_e(self, images, training=False):
        """The encoder on checked images in [0, 1]."""
        return self.encoder(tf.cast(images, self.compute_dtype) - 0.5, training=training)

    def forward(self, images, training=False):
        """Everything a step needs: dict with ``mean`` (unclipped decoder mean), ``log_scale``
        (or None), ``reconstructions`` (clipped to [0,1]) and the quantiser outputs."""
        images = self._check_images(images)
        z_e = self._z_e(images, training and self.encoder.trainable)
        # A frozen quantizer makes no training-time updates (EMA, restarts, k-means).
        vq = self.quantizer(z_e, training=training and self.quantizer.trainable)
        mean, log_scale = self._decoder_head(self.decoder(vq["quantized"], training=training))
        return dict(vq, mean=mean, log_scale=log_scale, reconstructions=tf.clip_by_value(mean, 0.0, 1.0))

    # ------------------------------------------------------------------ public API

    def encoder_outputs(self, images):
        """images float32 [B,H,W,C] in [0,1] -> z_e [B,h,w,D]."""
        return self._z_e(self._check_images(images))

    def images_from_vectors(self, z_q):
        """Codebook vectors [B,h,w,D] -> images float32 [B,H,W,C] in [0,1] (the decoder mean)."""
        mean, _ = self._decoder_head(self.decoder(tf.cast(z_q, self.compute_dtype)))
        return tf.clip_by_value(mean, 0.0, 1.0)

    def encode(self, images):
        """images float32 [B,H,W,C] in [0,1] -> codes int32 [B,h,w]."""
        images = self._check_images(images)
        return unless_empty(
            images,
            lambda: self.quantizer(self._z_e(images), training=False)["indices"],
            (0, *self.codes_shape),
            tf.int32,
        )

    def decode(self, codes):
        """codes int [B, *codes_shape] in [0,K) -> images float32 [B,H,W,C] in [0,1]."""
        codes = tf.convert_to_tensor(codes)
        rank = len(self.codes_shape) + 1
        if codes.shape.rank is not None and (
            codes.shape.rank != rank or (rank == 4 and codes.shape[-1] not in (None, self.codes_per_position))
        ):
            want = "[B, h, w]" if rank == 3 else f"[B, h, w, {self.codes_per_position}]"
            raise ValueError(f"codes must have shape {want}, got {codes.shape}.")
        return unless_empty(
            codes, lambda: self.images_from_vectors(self.quantizer.lookup(codes)), (0, *self.image_shape), tf.float32
        )

    # ------------------------------------------------------------------ training

    def losses_of(self, images, out):
        recon = self.reconstruction_loss(images, out["mean"], out["log_scale"])
        losses = {
            "reconstruction_loss": recon,
            "codebook_loss": out["codebook_loss"],
            "commitment_loss": out["commitment_loss"],
            "perplexity": out["perplexity"],
        }
        losses["loss"] = recon + out["codebook_loss"] + out["commitment_loss"] + out["entropy_loss"]
        if ENTROPY_KEY in self._trackers:
            losses[ENTROPY_KEY] = out["entropy_loss"]
        return losses

    @property
    def num_restarts(self):
        return tf.convert_to_tensor(self.quantizer.num_restarts)

    def get_config(self):
        config = super().get_config()
        for field, option in option_fields().items():
            if field in config and option.type == "int_list":
                config[field] = list(config[field])
        return config


def _has_entropy(layer) -> bool:
    """Whether `layer` has an entropy penalty to log (a weight that is not 0)."""
    return bool(getattr(layer, "entropy_weight", 0.0))


# The constructor's own arguments: what `get_config` records.
_ARGUMENTS = frozenset(inspect.signature(VQVAE.__init__).parameters) - {"self", "kwargs"}
