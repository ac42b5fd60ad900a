"""VQ-VAE-2: a two-level hierarchy of codes (Razavi et al. 2019, arXiv:1906.00446, section 3.1).

images -> bottom encoder (1/`downsample`) -> features -> top encoder (a further 1/`top_downsample`)
-> top quantizer -> top codes; the top decoder's output joins the bottom features, a 1x1
convolution maps them to the bottom quantizer -> bottom codes; the decoder takes both code maps
(the top one upsampled by a strided transposed convolution) back to the image. The top codes hold
global structure, the bottom ones local detail (the paper's figure 2a; rosinality/vq-vae-2-pytorch
has the same wiring). Both quantizers are EMA codebooks with k-means init and dead-code restart,
as VQ-VAE's default.
"""

from __future__ import annotations

import inspect

import keras
import tensorflow as tf

from vqvae_tf.layers import SERIALIZATION_PACKAGE
from vqvae_tf.layers.encoder_decoder import DOWNSAMPLE_FACTORS, Decoder, Encoder
from vqvae_tf.layers.quantizers import VectorQuantizerEMA
from vqvae_tf.models.autoencoders.base import RESTARTS_KEY, ImageAutoencoder, unless_empty
from vqvae_tf.models.autoencoders.registry import register_autoencoder
from vqvae_tf.models.code_grids import GRID_NAMES, LEVELS
from vqvae_tf.utils import checks

LOSS_KEYS = (
    "loss",
    "reconstruction_loss",
    *(f"{kind}_{level}" for kind in ("codebook_loss", "commitment_loss", "perplexity", "usage") for level in LEVELS),
)
ARCHITECTURE_ARGS = (
    "image_shape",
    "num_embeddings",
    "embedding_dim",
    "num_hiddens",
    "num_residual_hiddens",
    "num_residual_layers",
    "downsample",
    "top_downsample",
    "likelihood",
)


@register_autoencoder("vqvae2")
@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class VQVAE2(ImageAutoencoder):
    """VQ-VAE-2: `encode(images) -> (codes_top, codes_bottom)`, `decode(codes_top, codes_bottom) -> images`.

    Args:
      image_shape: (H, W, C); H and W divisible by downsample * top_downsample.
      num_embeddings, embedding_dim: K and D of both levels' codebooks.
      num_hiddens, num_residual_hiddens, num_residual_layers: of every encoder and decoder.
      downsample: the bottom codes' factor (2, 4 or 8): ``[B, H/downsample, W/downsample]``.
      top_downsample: the top codes' further factor (2, 4 or 8) over the bottom grid.
      commitment_cost, decay, dead_code_threshold, kmeans_init: of both EMA quantizers.
      likelihood: "mse" or "logistic" (as `VQVAE`).
      data_variance, seed: as `VQVAE`.

    Codes: int32 ``codes_top [B, H/(downsample*top_downsample), W/(...)]`` and ``codes_bottom
    [B, H/downsample, W/downsample]`` (`code_grids`). The defaults are the `vqvae2_64` config's network.

    Example:
    >>> model = VQVAE2(image_shape=(32, 32, 1), num_embeddings=16, embedding_dim=8, num_hiddens=16,
    ...                num_residual_hiddens=8, num_residual_layers=1)
    >>> top, bottom = model.encode(tf.zeros([2, 32, 32, 1]))
    >>> top.shape, bottom.shape
    (TensorShape([2, 4, 4]), TensorShape([2, 8, 8]))
    """

    title = "VQ-VAE-2"
    prior_family = "hierarchical"

    def __init__(
        self,
        image_shape=(64, 64, 3),
        num_embeddings: int = 512,
        embedding_dim: int = 64,
        num_hiddens: int = 128,
        num_residual_hiddens: int = 64,
        num_residual_layers: int = 2,
        downsample: int = 4,
        top_downsample: int = 2,
        commitment_cost: float = 0.25,
        decay: float = 0.99,
        dead_code_threshold: float = 1.0,
        kmeans_init: bool = True,
        likelihood: str = "mse",
        data_variance: float = 1.0,
        seed: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._set_arguments({name: value for name, value in locals().items() if name in _ARGUMENTS})
        grids = self.prior_grid_shapes(self._arguments)
        self.top_shape, self.bottom_shape = grids["codes_top"], grids["codes_bottom"]
        channels = self.image_shape[2]
        net = (num_hiddens, num_residual_hiddens, num_residual_layers)

        def quantizer(level, offset):
            return VectorQuantizerEMA(
                num_embeddings,
                embedding_dim,
                commitment_cost=commitment_cost,
                decay=decay,
                dead_code_threshold=dead_code_threshold,
                kmeans_init=kmeans_init,
                seed=seed + offset,
                name=f"quantizer_{level}",
            )

        self.encoder_bottom = Encoder(*net, num_hiddens, downsample, name="encoder_bottom")
        self.encoder_top = Encoder(*net, embedding_dim, top_downsample, name="encoder_top")
        self.quantizer_top = quantizer("top", 0)
        self.decoder_top = Decoder(embedding_dim, *net, top_downsample, name="decoder_top")
        self.pre_quantizer_bottom = keras.layers.Conv2D(embedding_dim, 1, name="pre_quantizer_bottom")
        self.quantizer_bottom = quantizer("bottom", 1)
        self.upsample_top = keras.layers.Conv2DTranspose(
            embedding_dim, 2 * top_downsample, strides=top_downsample, padding="same", name="upsample_top"
        )
        out_channels = channels * (2 if likelihood == "logistic" else 1)
        self.decoder = Decoder(out_channels, *net, downsample, name="decoder")
        self._trackers = {k: keras.metrics.Mean(name=k) for k in LOSS_KEYS}
        self._restarts = keras.metrics.Mean(name=RESTARTS_KEY)
        self.build()

    @classmethod
    def prior_grid_shapes(cls, arguments: dict) -> dict:
        """{grid name: shape} of a model made with `arguments`: the top and bottom code grids."""
        h, w, _ = arguments["image_shape"]
        bottom = (h // arguments["downsample"], w // arguments["downsample"])
        top = (bottom[0] // arguments["top_downsample"], bottom[1] // arguments["top_downsample"])
        return {"codes_top": top, "codes_bottom": bottom}

    @staticmethod
    def validate_arguments(arguments: dict) -> None:
        """Raises ValueError naming the first bad network argument in `arguments`."""
        for name in ("downsample", "top_downsample"):
            if arguments[name] not in DOWNSAMPLE_FACTORS:
                raise ValueError(f"{name} must be one of {DOWNSAMPLE_FACTORS}, got {arguments[name]!r}.")
        factor = arguments["downsample"] * arguments["top_downsample"]
        ImageAutoencoder.validate_network(
            arguments, factor, f"downsample * top_downsample = {factor} (the top codes' factor)"
        )

    # ------------------------------------------------------------------ code grids

    @property
    def code_grids(self) -> dict:
        return dict(zip(GRID_NAMES, (self.top_shape, self.bottom_shape)))

    @property
    def grid_codebooks(self) -> dict:
        return {name: (self.num_embeddings, 1) for name in GRID_NAMES}

    @property
    def total_downsample(self) -> int:
        return self.downsample * self.top_downsample

    def codes_of(self, out: dict) -> dict:
        return {name: out[f"indices_{level}"] for name, level in zip(GRID_NAMES, LEVELS)}

    def encode_grids(self, images) -> dict:
        return dict(zip(GRID_NAMES, self.encode(images)))

    def decode_grids(self, grids: dict):
        return self.decode(*(grids[name] for name in GRID_NAMES))

    @property
    def quantizers(self) -> dict:
        """{grid name: its quantizer}."""
        return dict(zip(GRID_NAMES, (self.quantizer_top, self.quantizer_bottom)))

    def frozen_codebooks(self) -> dict:
        return {name: tf.constant(q.codebook.numpy()) for name, q in self.quantizers.items()}

    def encode_with(self, images, codebooks: dict) -> dict:
        """`encode_grids` with the codebooks as given constants (no quantizer state: for TFLite)."""
        features = self.encoder_bottom(self._centred(self._check_images(images)))
        top = self.quantizer_top.indices_of(self.encoder_top(features), codebooks["codes_top"])
        top_vectors = self.quantizer_top.lookup(top, codebooks["codes_top"], check=False)
        z_bottom = self._bottom_inputs(features, top_vectors)
        return {"codes_top": top, "codes_bottom": self.quantizer_bottom.indices_of(z_bottom, codebooks["codes_bottom"])}

    def decode_with(self, grids: dict, codebooks: dict):
        return self.images_from_vectors(
            *(q.lookup(grids[name], codebooks[name], check=False) for name, q in self.quantizers.items())
        )

    # ------------------------------------------------------------------ network

    def build(self, input_shape=None):
        if self.built:
            return
        h, w, c = self.image_shape
        features = self.encoder_bottom(keras.KerasTensor((None, h, w, c)))
        z_top = self.encoder_top(features)
        self.quantizer_top.build(z_top.shape)
        top = self.decoder_top(keras.KerasTensor(z_top.shape))
        z_bottom = self.pre_quantizer_bottom(keras.layers.Concatenate()([features, top]))
        self.quantizer_bottom.build(z_bottom.shape)
        up = self.upsample_top(keras.KerasTensor(z_top.shape))
        self.decoder(keras.layers.Concatenate()([up, keras.KerasTensor(z_bottom.shape)]))
        self.built = True

    def _centred(self, images):
        return tf.cast(images, self.compute_dtype) - 0.5

    def _bottom_inputs(self, features, top_vectors):
        """The bottom quantizer's input: the bottom features joined with the top decoder's output."""
        top = self.decoder_top(tf.cast(top_vectors, self.compute_dtype))
        return self.pre_quantizer_bottom(tf.concat([features, top], axis=-1))

    def images_from_vectors(self, top_vectors, bottom_vectors):
        """Both levels' codebook vectors -> images float32 [B,H,W,C] in [0,1] (the decoder mean)."""
        mean, _ = self._decoder_head(self._decode_vectors(top_vectors, bottom_vectors))
        return tf.clip_by_value(mean, 0.0, 1.0)

    def _decode_vectors(self, top_vectors, bottom_vectors):
        up = self.upsample_top(tf.cast(top_vectors, self.compute_dtype))
        return self.decoder(tf.concat([up, tf.cast(bottom_vectors, self.compute_dtype)], axis=-1))

    def _quantize(self, images, training=False):
        """Checked images -> (top quantizer outputs, bottom quantizer outputs)."""
        features = self.encoder_bottom(self._centred(images), training=training)
        vq_top = self.quantizer_top(self.encoder_top(features, training=training), training=training)
        vq_bottom = self.quantizer_bottom(self._bottom_inputs(features, vq_top["quantized"]), training=training)
        return vq_top, vq_bottom

    def forward(self, images, training=False):
        """Everything a step needs: ``mean``, ``log_scale`` (or None), ``reconstructions`` and each
        level's quantizer outputs as ``<key>_top`` / ``<key>_bottom``."""
        vq_top, vq_bottom = self._quantize(self._check_images(images), training)
        mean, log_scale = self._decoder_head(self._decode_vectors(vq_top["quantized"], vq_bottom["quantized"]))
        out = {f"{k}_top": v for k, v in vq_top.items()}
        out.update({f"{k}_bottom": v for k, v in vq_bottom.items()})
        return dict(out, mean=mean, log_scale=log_scale, reconstructions=tf.clip_by_value(mean, 0.0, 1.0))

    # ------------------------------------------------------------------ public API

    def encode(self, images):
        """images float32 [B,H,W,C] in [0,1] -> (codes_top int32 [B,ht,wt], codes_bottom int32 [B,hb,wb])."""
        images = self._check_images(images)

        def run():
            vq_top, vq_bottom = self._quantize(images)
            return vq_top["indices"], vq_bottom["indices"]

        empty = (tf.zeros((0, *self.top_shape), tf.int32), tf.zeros((0, *self.bottom_shape), tf.int32))
        return tf.cond(tf.shape(images)[0] > 0, run, lambda: empty)

    def decode(self, codes_top, codes_bottom):
        """Both code grids (int, in [0, K), one of each per image) -> images float32 [B,H,W,C] in [0,1]."""
        codes_top = self._check_grid(codes_top, "codes_top", self.top_shape)
        codes_bottom = self._check_grid(codes_bottom, "codes_bottom", self.bottom_shape)
        codes_bottom = checks.require(
            codes_bottom,
            tf.equal(tf.shape(codes_top)[0], tf.shape(codes_bottom)[0]),
            "codes_top and codes_bottom must have the same batch size: got",
            tf.shape(codes_top)[0],
            "and",
            tf.shape(codes_bottom)[0],
        )
        return unless_empty(
            codes_top,
            lambda: self.images_from_vectors(
                self.quantizer_top.lookup(codes_top), self.quantizer_bottom.lookup(codes_bottom)
            ),
            (0, *self.image_shape),
            tf.float32,
        )

    @staticmethod
    def _check_grid(codes, name, shape):
        codes = tf.convert_to_tensor(codes)
        if codes.shape.rank is not None and (
            codes.shape.rank != 3 or any(d is not None and d != s for d, s in zip(codes.shape[1:], shape))
        ):
            raise ValueError(f"{name} must have shape [B, {shape[0]}, {shape[1]}], got {codes.shape}.")
        return codes

    # ------------------------------------------------------------------ training

    @property
    def num_restarts(self):
        return tf.convert_to_tensor(self.quantizer_top.num_restarts) + tf.convert_to_tensor(
            self.quantizer_bottom.num_restarts
        )

    def losses_of(self, images, out):
        losses = {"reconstruction_loss": self.reconstruction_loss(images, out["mean"], out["log_scale"])}
        for level in LEVELS:
            for key in ("codebook_loss", "commitment_loss", "perplexity"):
                losses[f"{key}_{level}"] = out[f"{key}_{level}"]
            # The fraction of the K codes this batch uses.
            counts = tf.math.bincount(
                tf.reshape(out[f"indices_{level}"], [-1]), minlength=self.num_embeddings, maxlength=self.num_embeddings
            )
            losses[f"usage_{level}"] = tf.reduce_mean(tf.cast(counts > 0, tf.float32))
        losses["loss"] = losses["reconstruction_loss"] + tf.add_n(
            [losses[f"{key}_{level}"] for key in ("codebook_loss", "commitment_loss") for level in LEVELS]
        )
        return losses


_ARGUMENTS = frozenset(inspect.signature(VQVAE2.__init__).parameters) - {"self", "kwargs"}
