"""The VQ-VAE model: encoder -> vector quantiser -> decoder, with its own train/test steps.

arXiv:1711.00937, eq. 3: L = log p(x|z_q(x)) + ||sg[z_e(x)] - e||^2 + beta ||z_e(x) - sg[e]||^2.
The reconstruction term is the MSE divided by the training-set pixel variance (as the paper's
and Sonnet's CIFAR-10 results), or, with ``likelihood="logistic"``, the negative log-likelihood per
dimension (nats) of a discretized logistic, which makes p(x|z) a proper discrete distribution.
"""

from __future__ import annotations

import inspect
import math

import keras
import tensorflow as tf

from vqvae_tf.layers import SERIALIZATION_PACKAGE, likelihoods
from vqvae_tf.layers.encoder_decoder import Decoder, Encoder
from vqvae_tf.layers.fsq import FiniteScalarQuantizer, validate_levels
from vqvae_tf.layers.quantizers import DISTANCES, GRADIENTS, VectorQuantizer, VectorQuantizerEMA
from vqvae_tf.layers.residual_vq import ResidualVectorQuantizer
from vqvae_tf.models import presets
from vqvae_tf.utils import checks, distribute

LOSS_KEYS = ("loss", "reconstruction_loss", "codebook_loss", "commitment_loss", "perplexity")
# Logged in training besides LOSS_KEYS: codes restarted per step (mean over the logging window).
RESTARTS_KEY = "restarts"
QUANTIZERS = {
    "vq": VectorQuantizer,
    "ema": VectorQuantizerEMA,
    "fsq": FiniteScalarQuantizer,
    "rvq": ResidualVectorQuantizer,
}
LIKELIHOODS = ("mse", "logistic")
# Constructor arguments that shape the variables: a checkpoint made with one value cannot be
# restored into a model built with another.
ARCHITECTURE_ARGS = (
    "image_shape",
    "num_embeddings",
    "embedding_dim",
    "num_hiddens",
    "num_residual_hiddens",
    "num_residual_layers",
    "downsample",
    "quantizer",
    "fsq_levels",
    "num_quantizers",
    "distance",
    "likelihood",
)
# Arguments that come from the data and the run rather than from a network configuration.
RUN_ARGS = ("data_variance", "seed")


class ImageAutoencoder(presets.PresetMixin, keras.Model):
    """What the zoo's autoencoders (`VQVAE`, `vqvae2.VQVAE2`) share: checked images in [0, 1], the
    decoder head and its likelihood p(x|z), presets, the loss trackers and `test_step`, and the
    code grids API that every stage and export uses:

      code_grids                 {name: codes shape per image}: {"codes": ...} for VQVAE,
                                 {"codes_top": ..., "codes_bottom": ...} for VQVAE2
      grid_codebooks             {name: (K, codes per position)}
      encode_grids(images)       -> {name: int32 codes};  decode_grids({name: codes}) -> images
      prior_grids(), to_prior_grids(grids), from_prior_grids(grids): the layout a prior models
                                 (residual VQ: a position's codes side by side)
      frozen_codebooks(), encode_with(images, cb), decode_with(grids, cb): the same with the
                                 codebooks as constants (for TFLite conversion)
      codes_of(forward_output)   {name: codes} of a `forward` pass

    Subclasses call `_set_arguments` with their constructor's arguments and set `_trackers` (name ->
    Mean) and `_restarts`; they define `forward`, `compute_losses` and `num_restarts` (dead codes
    restarted so far, over all quantizers), and may adjust the gradients (`_adjust_gradients`).
    """

    def _set_arguments(self, arguments: dict, attribute_names: dict | None = None) -> None:
        """Validates the constructor's `arguments` (`validate_arguments` and data_variance > 0),
        keeps them for `get_config` and sets each as an attribute (renamed by `attribute_names`)."""
        arguments["image_shape"] = tuple(int(s) for s in arguments["image_shape"])
        self.validate_arguments(arguments)
        if not arguments["data_variance"] > 0:
            raise ValueError(f"data_variance must be > 0, got {arguments['data_variance']}.")
        arguments["data_variance"] = float(arguments["data_variance"])
        self._arguments = arguments
        for name, value in arguments.items():
            setattr(self, (attribute_names or {}).get(name, name), value)

    @staticmethod
    def validate_network(arguments: dict, downsample: int, what: str) -> None:
        """The checks every autoencoder's `validate_arguments` starts with: image shape, widths,
        likelihood, and an image size divisible by `downsample` (`what` names the factor)."""
        image_shape = tuple(arguments["image_shape"])
        if len(image_shape) != 3 or min(image_shape) <= 0:
            raise ValueError(f"image_shape must be (H, W, C) with positive sizes, got {image_shape}.")
        for name in ("num_embeddings", "embedding_dim", "num_hiddens", "num_residual_hiddens"):
            checks.positive_int(name, arguments[name])
        if arguments["num_residual_layers"] < 0:
            raise ValueError(f"num_residual_layers must be >= 0, got {arguments['num_residual_layers']}.")
        checks.one_of("likelihood", arguments["likelihood"], LIKELIHOODS)
        h, w, _ = image_shape
        if h % downsample or w % downsample:
            raise ValueError(
                f"image size {h}x{w} is not divisible by {what}; "
                "choose a config whose downsampling fits the images, or another --image_size."
            )

    def _check_images(self, images):
        return checks.batch_of(images, "images", self.image_shape, integer=False, kind="float in [0,1]")

    def _decoder_head(self, decoded):
        """Splits the decoder output into (mean in [0,1] units, log-scale or None)."""
        decoded = tf.cast(decoded, tf.float32)
        if self.likelihood == "logistic":
            mean, raw_scale = tf.split(decoded, 2, axis=-1)
            return mean + 0.5, raw_scale + 2.0
        return decoded + 0.5, None

    def decoder_distribution(self, mean, log_scale=None, scale=None):
        """The discrete p(x|z): a discretized logistic (logistic head) or Gaussian of `scale` pixels."""
        if log_scale is not None:
            return likelihoods.discretized_logistic(mean, log_scale)
        return likelihoods.discretized_gaussian(mean, scale)

    def reconstruction_loss(self, images, mean, log_scale):
        if self.likelihood == "logistic":
            nll = -likelihoods.log_prob_per_image(self.decoder_distribution(mean, log_scale), images)
            return tf.reduce_mean(nll) / float(self.image_shape[0] * self.image_shape[1] * self.image_shape[2])
        return tf.reduce_mean(tf.square(mean - tf.cast(images, tf.float32))) / self.data_variance

    def call(self, images, training=False):
        """images float32 [B,H,W,C] in [0,1] -> reconstructions float32 [B,H,W,C] in [0,1]."""
        return self.forward(images, training=training)["reconstructions"]

    def prior_grids(self) -> dict:
        return dict(self.code_grids)

    def to_prior_grids(self, grids: dict) -> dict:
        return dict(grids)

    def from_prior_grids(self, grids: dict) -> dict:
        return dict(grids)

    @property
    def code_bits_per_image(self) -> float:
        """What the codes of one image take without a prior: log2 K bits per code."""
        return float(
            sum(
                math.prod(shape) * math.log2(k)
                for shape, (k, _) in zip(self.code_grids.values(), self.grid_codebooks.values())
            )
        )

    # ------------------------------------------------------------------ training

    @property
    def metrics(self):
        return [*self._trackers.values(), self._restarts]

    def _adjust_gradients(self, grads, variables):
        """A subclass's last word on the gradients before the optimizer step (identity)."""
        return grads

    def train_step(self, data):
        images = data[0] if isinstance(data, (tuple, list)) else data
        restarts_before = self.num_restarts  # read now
        with tf.GradientTape() as tape:
            losses = self.compute_losses(images, training=True)
            scaled = self.optimizer.scale_loss(distribute.replica_scaled(losses["loss"]))
        variables = self.trainable_variables
        grads = self._adjust_gradients(tape.gradient(scaled, variables), variables)
        self.optimizer.apply_gradients(zip(grads, variables))
        self._restarts.update_state(tf.cast(self.num_restarts - restarts_before, tf.float32))
        return dict(self._update_trackers(losses), **{RESTARTS_KEY: self._restarts.result()})

    def get_config(self):
        return dict(super().get_config(), **dict(self._arguments, image_shape=list(self.image_shape)))

    def _update_trackers(self, losses):
        for key, tracker in self._trackers.items():
            tracker.update_state(losses[key])
        return {k: t.result() for k, t in self._trackers.items()}

    def test_step(self, data):
        images = data[0] if isinstance(data, (tuple, list)) else data
        return self._update_trackers(self.compute_losses(images, training=False))


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class VQVAE(ImageAutoencoder):
    """VQ-VAE: `encode(images) -> codes`, `decode(codes) -> images`, `call(images) -> reconstructions`.

    Args:
      image_shape: (H, W, C) of the images.
      num_embeddings, embedding_dim, commitment_cost: of the quantiser.
      num_hiddens, num_residual_hiddens, num_residual_layers, downsample: of encoder/decoder.
      quantizer: "vq" (gradient-trained codebook), "ema" (EMA codebook), "fsq" (finite scalar
        quantization: `fsq_levels`; then embedding_dim = len(fsq_levels) and num_embeddings =
        prod(fsq_levels)) or "rvq" (residual VQ of `num_quantizers` EMA stages of K codes each:
        codes ``[B, h, w, num_quantizers]``).
      decay, dead_code_threshold, kmeans_init: quantiser options (see `VectorQuantizer(EMA)`).
      distance: "euclidean" or "cosine" (l2-normalised codes; vq and ema).
      gradient: "straight_through" or "rotation" (the rotation trick; vq, ema and rvq).
      fsq_levels: levels per channel of the "fsq" quantizer.
      num_quantizers, quantizer_dropout: depth and quantizer dropout of the "rvq" quantizer.
      likelihood: "mse" or "logistic".
      data_variance: training-set pixel variance (normaliser of the MSE loss).
      seed: seed of the quantiser's random draws.

    The defaults are the `fashion_mnist` config's network. This signature is the one list of the
    model's fields: `get_config` and `vqvae_tf.configs.VQVAEConfig` are derived from it.
    Images are float32 ``[B,H,W,C]`` in [0,1]; codes are int32 ``[B, H/downsample, W/downsample]``
    (``codes_shape`` per image; residual VQ adds a last axis of its depth).

    Example:
    >>> from vqvae_tf import VQVAE, get_config
    >>> model = get_config("tiny").build()                 # untrained, from a named config
    >>> model = VQVAE.from_preset("fashion_mnist")        # pretrained (a name or a directory)
    >>> model.encode(tf.zeros([2, 28, 28, 1])).shape
    TensorShape([2, 7, 7])
    """

    def __init__(
        self,
        image_shape=(28, 28, 1),
        num_embeddings: int = 256,
        embedding_dim: int = 32,
        num_hiddens: int = 64,
        num_residual_hiddens: int = 32,
        num_residual_layers: int = 2,
        downsample: int = 4,
        commitment_cost: float = 0.25,
        quantizer: str = "ema",
        decay: float = 0.99,
        dead_code_threshold: float = 1.0,
        kmeans_init: bool = True,
        distance: str = "euclidean",
        gradient: str = "straight_through",
        fsq_levels=(8, 5, 5, 5),
        num_quantizers: int = 2,
        quantizer_dropout: float = 0.0,
        likelihood: str = "mse",
        data_variance: float = 1.0,
        seed: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        arguments = {name: value for name, value in locals().items() if name in _ARGUMENTS}
        arguments["fsq_levels"] = tuple(fsq_levels)
        # `self.quantizer` is the layer; its type string is `quantizer_type`.
        self._set_arguments(arguments, {"quantizer": "quantizer_type"})
        h, w, channels = self.image_shape
        self.latent_shape = (h // downsample, w // downsample)

        self.encoder = Encoder(
            num_hiddens, num_residual_hiddens, num_residual_layers, embedding_dim, downsample, name="encoder"
        )
        self.quantizer = self._make_quantizer(arguments)
        out_channels = channels * (2 if likelihood == "logistic" else 1)
        self.decoder = Decoder(
            out_channels, num_hiddens, num_residual_hiddens, num_residual_layers, downsample, name="decoder"
        )
        self._trackers = {k: keras.metrics.Mean(name=k) for k in LOSS_KEYS}
        self._restarts = keras.metrics.Mean(name=RESTARTS_KEY)
        # The input shape is known, so all state is created now (as in functional backbones):
        # the model saves and checkpoints completely even if only train_step ever ran.
        self.build()

    @staticmethod
    def _make_quantizer(a: dict):
        if a["quantizer"] == "fsq":
            return FiniteScalarQuantizer(a["fsq_levels"], a["embedding_dim"], name="quantizer")
        args = dict(
            num_embeddings=a["num_embeddings"],
            embedding_dim=a["embedding_dim"],
            commitment_cost=a["commitment_cost"],
            dead_code_threshold=a["dead_code_threshold"],
            kmeans_init=a["kmeans_init"],
            gradient=a["gradient"],
            distance=a["distance"],
            seed=a["seed"],
            name="quantizer",
        )
        if a["quantizer"] in ("ema", "rvq"):
            args["decay"] = a["decay"]
        if a["quantizer"] == "rvq":
            args.update(num_quantizers=a["num_quantizers"], quantizer_dropout=a["quantizer_dropout"])
        return QUANTIZERS[a["quantizer"]](**args)

    @staticmethod
    def validate_arguments(arguments: dict) -> None:
        """Raises ValueError naming the first bad network argument in `arguments`."""
        ImageAutoencoder.validate_network(arguments, arguments["downsample"], f"downsample={arguments['downsample']}")
        checks.one_of("quantizer", arguments["quantizer"], tuple(QUANTIZERS))
        _validate_quantizer_options(arguments)

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

    def _z_e(self, images, training=False):
        """The encoder on checked images in [0, 1]."""
        return self.encoder(tf.cast(images, self.compute_dtype) - 0.5, training=training)

    def forward(self, images, training=False):
        """Everything a step needs: dict with ``mean`` (unclipped decoder mean), ``log_scale``
        (or None), ``reconstructions`` (clipped to [0,1]) and the quantiser outputs."""
        images = self._check_images(images)
        z_e = self._z_e(images, training)
        vq = self.quantizer(z_e, training=training)
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

    def compute_losses(self, images, training):
        out = self.forward(images, training=training)
        recon = self.reconstruction_loss(images, out["mean"], out["log_scale"])
        losses = {
            "reconstruction_loss": recon,
            "codebook_loss": out["codebook_loss"],
            "commitment_loss": out["commitment_loss"],
            "perplexity": out["perplexity"],
        }
        losses["loss"] = recon + out["codebook_loss"] + out["commitment_loss"]
        return losses

    @property
    def num_restarts(self):
        return tf.convert_to_tensor(self.quantizer.num_restarts)

    def _adjust_gradients(self, grads, variables):
        """For a gradient-trained codebook: rows that this step's restart or k-means install
        replaced get no gradient (it was taken at the old vectors) and their optimizer state
        (Adam's moments, momentum, ...) is reset to zero, so stale moments cannot move them."""
        grads = list(grads)
        keys = [id(v) for v in variables]
        for codebook, reseeded in self.quantizer.reseedable_codebooks():
            if id(codebook) in keys:
                i = keys.index(id(codebook))
                grads[i] = self._forget_rows(codebook, grads[i], reseeded.value > 0)
        return grads

    def _forget_rows(self, codebook, grad, reseeded):
        if isinstance(grad, tf.IndexedSlices):  # the gather's gradient: keep it sparse
            kept = tf.cast(~tf.gather(reseeded, grad.indices), grad.values.dtype)
            grad = tf.IndexedSlices(grad.values * kept[:, None], grad.indices, grad.dense_shape)
        else:
            grad = tf.where(reseeded[:, None], tf.zeros_like(grad), grad)
        # Keras names a variable's optimizer state after the variable's path.
        prefix = codebook.path.replace("/", "_") + "_"
        slots = [v for v in self.optimizer.variables if v.name.startswith(prefix) and v.shape == codebook.shape]

        def reset(strategy, mask):
            for slot in slots:
                strategy.extended.update(
                    slot.value,
                    lambda v, m: v.assign(tf.where(m[:, None], tf.zeros_like(v), v)),
                    args=(mask,),
                    group=False,
                )

        # Optimizer variables are updated in cross-replica context (as the optimizer does).
        tf.distribute.get_replica_context().merge_call(reset, args=(reseeded,))
        return grad

    def get_config(self):
        return dict(super().get_config(), fsq_levels=list(self.fsq_levels))


def _validate_quantizer_options(a: dict) -> None:
    """ValueError naming the first quantizer option that does not fit the quantizer."""
    kind = a["quantizer"]
    checks.one_of("distance", a["distance"], DISTANCES)
    checks.one_of("gradient", a["gradient"], GRADIENTS)
    if a["distance"] == "cosine" and kind not in ("vq", "ema"):
        raise ValueError(f"distance='cosine' applies to the vq and ema quantizers, not {kind!r}.")
    if a["gradient"] == "rotation" and kind == "fsq":
        raise ValueError(
            "gradient='rotation' applies to the vq, ema and rvq quantizers: FSQ has no codebook vector to rotate to."
        )
    checks.positive_int("num_quantizers", a["num_quantizers"])
    if not 0.0 <= a["quantizer_dropout"] <= 1.0:
        raise ValueError(f"quantizer_dropout must be in [0, 1], got {a['quantizer_dropout']}.")
    if kind == "fsq":
        levels = validate_levels(a["fsq_levels"])
        size = math.prod(levels)
        if a["embedding_dim"] != len(levels) or a["num_embeddings"] != size:
            raise ValueError(
                f"quantizer='fsq' with fsq_levels={list(levels)} quantizes embedding_dim={len(levels)} channels "
                f"into num_embeddings={size} codes, got embedding_dim={a['embedding_dim']} and "
                f"num_embeddings={a['num_embeddings']} (a config derives both from fsq_levels)."
            )


# The constructor's own arguments: what `get_config` records.
_ARGUMENTS = frozenset(inspect.signature(VQVAE.__init__).parameters) - {"self", "kwargs"}


def unless_empty(batch, fn, empty_shape, dtype):
    """`fn()`, or an empty result for a batch of 0 (e.g. an empty TF Serving request): TF's fused
    CPU Conv2D + ReLU kernel rejects a batch of 0 with a misleading error."""
    return tf.cond(tf.shape(batch)[0] > 0, fn, lambda: tf.zeros(empty_shape, dtype))
