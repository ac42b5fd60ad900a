"""`ImageAutoencoder`: what the zoo's autoencoders (`VQVAE`, `vqvae2.VQVAE2`) share.

Checked images in [0, 1], the decoder head and its likelihood p(x|z), presets, the loss trackers,
`train_step` / `test_step`, and the code-grids API that every stage and export runs on.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from vqvae_tf.layers import likelihoods
from vqvae_tf.models import presets
from vqvae_tf.models.code_grids import ONE_GRID
from vqvae_tf.utils import checks, distribute

LIKELIHOODS = ("mse", "logistic")
# Logged in training besides a model's loss keys: codes restarted per step (mean over the logging window).
RESTARTS_KEY = "restarts"
# Every autoencoder's arguments that come from the data and the run rather than from a network configuration.
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
      quantizers                 {name: the quantizer layer of that grid}

    Subclasses call `_set_arguments` with their constructor's arguments and set `_trackers` (name ->
    Mean) and `_restarts`; they define `forward`, `losses_of(images, forward_output)` and `num_restarts` (dead codes
    restarted so far, over all quantizers), and may adjust the gradients (`_adjust_gradients`).
    """

    # Set by `register_autoencoder`: the name a config's `model` gives it ("vqvae").
    model_name = ""
    # The report's name for it.
    title = ""
    # The prior family (`vqvae_tf.models.priors`) that models its codes: ONE_GRID, one code grid
    # that any one-grid prior (`--prior`) models; VQ-VAE-2's two grids name "hierarchical".
    prior_family = ONE_GRID

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

    # The training objective (`vqvae_tf.losses.objective.Objective`: L1, LPIPS, PatchGAN), or None
    # for the model's own loss. Never part of the model's state: see `use_objective`.
    objective = None
    restarts_key = RESTARTS_KEY

    def use_objective(self, objective) -> None:
        """Trains with `objective` (None: the model's own loss). It is kept outside Keras' tracking,
        so its discriminator and LPIPS never enter the model's weights, presets or exports."""
        object.__setattr__(self, "objective", objective)

    def last_layer_kernel(self):
        """The kernel of the decoder's output layer (where VQGAN's adaptive weight is measured)."""
        return self.decoder.strided[-1].kernel

    def compute_losses(self, images, training):
        """The model's own losses (dict with "loss", "reconstruction_loss", ...) of a forward pass."""
        return self.losses_of(images, self.forward(images, training=training))

    @property
    def metrics(self):
        extra = list(self.objective.trackers.values()) if self.objective is not None else []
        return [*self._trackers.values(), self._restarts, *extra]

    def _adjust_gradients(self, grads, variables):
        """The gradients the optimizer step applies. A gradient-trained codebook's rows that this
        step's restart or k-means install replaced (each quantizer's `reseedable_codebooks`) get
        no gradient (it was taken at the old vectors), and their optimizer state (Adam's moments,
        momentum, ...) is reset to zero, so stale moments cannot move them. A subclass may add to it."""
        grads = list(grads)
        index = {id(v): i for i, v in enumerate(variables)}
        for quantizer in self.quantizers.values():
            for codebook, reseeded in quantizer.reseedable_codebooks():
                if id(codebook) in index:  # (not when the codebook is frozen)
                    i = index[id(codebook)]
                    grads[i] = _forget_rows(self.optimizer, codebook, grads[i], reseeded.value > 0)
        return grads

    def train_step(self, data):
        """One optimizer step on the model's own loss, or on its `objective`'s (which may also
        step a discriminator once the autoencoder's step is applied)."""
        images = data[0] if isinstance(data, (tuple, list)) else data
        objective = self.objective
        restarts_before = self.num_restarts  # read now
        with tf.GradientTape(persistent=objective is not None and objective.persistent_tape) as tape:
            out = self.forward(images, training=True)
            losses = self.losses_of(images, out)
            if objective is not None:
                losses, objective_logs = objective.losses(self, images, out, losses, tape)
            scaled = self.optimizer.scale_loss(distribute.replica_scaled(losses["loss"]))
        variables = self.trainable_variables
        grads = self._adjust_gradients(tape.gradient(scaled, variables), variables)
        del tape
        self.optimizer.apply_gradients(zip(grads, variables))
        extra = objective.finish_step(images, out, objective_logs) if objective is not None else {}
        self._restarts.update_state(tf.cast(self.num_restarts - restarts_before, tf.float32))
        return dict(self._update_trackers(losses), **extra, **{RESTARTS_KEY: self._restarts.result()})

    def get_config(self):
        return dict(super().get_config(), **dict(self._arguments, image_shape=list(self.image_shape)))

    def _update_trackers(self, losses):
        for key, tracker in self._trackers.items():
            tracker.update_state(losses[key])
        return {k: t.result() for k, t in self._trackers.items()}

    def test_step(self, data):
        images = data[0] if isinstance(data, (tuple, list)) else data
        return self._update_trackers(self.compute_losses(images, training=False))


def optimizer_slots(optimizer, variable) -> list:
    """The optimizer's state variables of `variable` (Adam's two moments, SGD's momentum, ...):
    Keras names each `add_variable_from_reference` after the variable's path."""
    prefix = variable.path.replace("/", "_") + "_"
    return [v for v in optimizer.variables if v.name.startswith(prefix) and v.shape == variable.shape]


def _forget_rows(optimizer, codebook, grad, reseeded):
    """`grad` with the `reseeded` rows zeroed, after zeroing those rows of the optimizer's state."""
    if isinstance(grad, tf.IndexedSlices):  # the gather's gradient: keep it sparse
        kept = tf.cast(~tf.gather(reseeded, grad.indices), grad.values.dtype)
        grad = tf.IndexedSlices(grad.values * kept[:, None], grad.indices, grad.dense_shape)
    else:
        grad = tf.where(reseeded[:, None], tf.zeros_like(grad), grad)
    slots = optimizer_slots(optimizer, codebook)

    def reset(strategy, mask):
        for slot in slots:
            strategy.extended.update(
                slot.value, lambda v, m: v.assign(tf.where(m[:, None], tf.zeros_like(v), v)), args=(mask,), group=False
            )

    # Optimizer variables are updated in cross-replica context (as the optimizer does).
    tf.distribute.get_replica_context().merge_call(reset, args=(reseeded,))
    return grad


def unless_empty(batch, fn, empty_shape, dtype):
    """`fn()`, or an empty result for a batch of 0 (e.g. an empty TF Serving request): TF's fused
    CPU Conv2D + ReLU kernel rejects a batch of 0 with a misleading error."""
    return tf.cond(tf.shape(batch)[0] > 0, fn, lambda: tf.zeros(empty_shape, dtype))
