"""The VQGAN training objective (Esser et al. 2021, taming-transformers' VQLPIPSWithDiscriminator)
for any autoencoder of the zoo: an L1 or MSE reconstruction term, LPIPS, and a PatchGAN hinge loss
weighted adaptively, in one step that updates the autoencoder and the discriminator.

    L_G = rec + perceptual_weight * LPIPS(x, x_hat) + lambda * f * (-mean D(x_hat)) + quantizer losses
    L_D = f * 0.5 * (mean relu(1 - D(x)) + mean relu(1 + D(x_hat)))
    lambda = adversarial_weight * clip(|grad_L rec+perc| / (|grad_L g_loss| + 1e-4), 0, 1e4)

with grad_L the gradient at the decoder's last layer's kernel (VQGAN eq. 7) and f = 0 before
`disc_start` steps, 1 after (the discriminator neither acts nor learns before). "l1" is the mean
absolute error on the [-1, 1] scale, as taming's; "mse" is the model's own term (MSE divided by the
data variance, or the logistic head's likelihood).

`ImageLossConfig` holds the fields (the autoencoder configs inherit them); `Objective` is a plain
Python object (Keras never tracks it), so the discriminator and LPIPS are checkpointed through
`checkpoint_objects` but never saved with the autoencoder, its presets or exports.
"""

from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf

from vqvae_tf.losses.discriminator import NLayerDiscriminator
from vqvae_tf.losses.lpips import LPIPS, MIN_SIZE
from vqvae_tf.utils import checks, distribute

RECONSTRUCTION_LOSSES = ("mse", "l1")
PERCEPTUAL_NETS = ("alex", "vgg")
MAX_ADAPTIVE_WEIGHT = 1e4
PERCEPTUAL_KEY = "perceptual_loss"
ADVERSARIAL_KEYS = ("generator_loss", "discriminator_loss", "adaptive_weight", "logits_real", "logits_fake")


@dataclasses.dataclass
class ImageLossConfig:
    """The training losses of an autoencoder config (flags of the same names). With the defaults
    (mse, no perceptual or adversarial term) training is the model's own loss, unchanged."""

    reconstruction_loss: str = "mse"  # "mse" (the model's likelihood term) or "l1"
    perceptual_weight: float = 0.0  # LPIPS weight (VQGAN: 1.0)
    perceptual_net: str = "alex"  # "alex" (cheap; the training default) or "vgg"
    # Steps before LPIPS acts (computed only from then on): the cheap reconstruction term first,
    # LPIPS (about 7x the step's cost at 64 px on VGG, on a CPU) to sharpen a trained autoencoder.
    perceptual_start: int = 0
    adversarial_weight: float = 0.0  # the PatchGAN term's weight (VQGAN: 0.8), times the adaptive lambda
    disc_layers: int = 3  # the discriminator's stride-2 convolutions
    disc_filters: int = 64
    disc_start: int = 0  # steps before the discriminator acts
    disc_learning_rate: float | None = None  # its Adam's (betas 0.5, 0.9); None: the config's learning_rate

    def validate_losses(self) -> None:
        checks.one_of("reconstruction_loss", self.reconstruction_loss, RECONSTRUCTION_LOSSES)
        checks.one_of("perceptual_net", self.perceptual_net, PERCEPTUAL_NETS)
        for name in ("perceptual_weight", "adversarial_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        checks.positive_int("disc_layers", self.disc_layers)
        checks.positive_int("disc_filters", self.disc_filters)
        for name in ("disc_start", "perceptual_start"):
            value = getattr(self, name)
            if int(value) != value or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value}.")
        if self.disc_learning_rate is not None and not self.disc_learning_rate > 0:
            raise ValueError(f"disc_learning_rate must be > 0, got {self.disc_learning_rate}.")
        if self.reconstruction_loss == "l1" and getattr(self, "likelihood", "mse") == "logistic":
            raise ValueError(
                "reconstruction_loss=l1 needs likelihood=mse: the logistic head is trained by its own likelihood."
            )

    def check_image_size(self, image_shape) -> None:
        """Refuses an image size (H, W, ...) too small for these losses: LPIPS's net, or the
        discriminator's stack (its convolutions are unpadded past taming's 1 px). Checked against
        the shape the model is built for (the data's, once known), not the config's default."""
        h, w = (int(s) for s in tuple(image_shape)[:2])
        if self.perceptual_weight > 0 and min(h, w) < MIN_SIZE[self.perceptual_net]:
            raise ValueError(
                f"perceptual_net={self.perceptual_net} needs images of at least {MIN_SIZE[self.perceptual_net]} px "
                f"a side, these are {h}x{w}"
                + ("; use --perceptual_net=vgg (16 px)." if self.perceptual_net == "alex" else ".")
            )
        if self.adversarial:
            smallest = NLayerDiscriminator.min_image_size(self.disc_layers)
            if min(h, w) < smallest:
                raise ValueError(
                    f"disc_layers={self.disc_layers} needs images of at least {smallest} px a side, these are {h}x{w}: "
                    "lower --disc_layers."
                )

    @property
    def adversarial(self) -> bool:
        return self.adversarial_weight > 0

    def discriminator_text(self) -> str:
        """The discriminator's shape ("none" without one): what a resumed run must keep."""
        return f"{self.disc_layers} layers, {self.disc_filters} filters" if self.adversarial else "none"

    def is_plain(self) -> bool:
        return self.reconstruction_loss == "mse" and self.perceptual_weight == 0 and not self.adversarial

    def make_objective(self, image_shape) -> Objective | None:
        """The `Objective` of these fields, or None for the model's own loss. Call under the
        strategy's scope (it creates the discriminator and its optimizer)."""
        return None if self.is_plain() else Objective(self, image_shape)


class Objective:
    """The losses of an `ImageLossConfig` in an autoencoder's train step (`losses`, then
    `finish_step`, which steps the discriminator); see the module."""

    def __init__(self, config: ImageLossConfig, image_shape):
        self.reconstruction = config.reconstruction_loss
        self.perceptual_weight = float(config.perceptual_weight)
        self.adversarial_weight = float(config.adversarial_weight)
        self.disc_start = int(config.disc_start)
        self.perceptual_start = int(config.perceptual_start)
        self.lpips = LPIPS(config.perceptual_net, check_inputs=False) if self.perceptual_weight > 0 else None
        self.discriminator = self.discriminator_optimizer = None
        keys = (PERCEPTUAL_KEY,) if self.lpips is not None else ()
        if config.adversarial:
            config.check_image_size(image_shape)
            self.discriminator = NLayerDiscriminator(config.disc_layers, config.disc_filters)
            self.discriminator(tf.zeros([1, *image_shape]))  # creates its variables
            lr = config.disc_learning_rate or config.learning_rate
            self.discriminator_optimizer = keras.optimizers.Adam(lr, beta_1=0.5, beta_2=0.9)
            self.discriminator_optimizer.build(self.discriminator.trainable_variables)
            keys += ADVERSARIAL_KEYS
        self.trackers = {k: keras.metrics.Mean(name=k) for k in keys}

    def checkpoint_objects(self) -> dict:
        """The training state besides the autoencoder and its optimizer (for tf.train.Checkpoint)."""
        if self.discriminator is None:
            return {}
        return {"discriminator": self.discriminator, "discriminator_optimizer": self.discriminator_optimizer}

    def _adaptive_weight(self, tape, nll, g_loss, last_layer):
        """VQGAN eq. 7 on the global batch: the gradients at `last_layer` are summed over replicas
        (each replica's loss is its share of the global mean) before their norms are taken."""
        shares = distribute.replica_scaled(nll), distribute.replica_scaled(g_loss)  # recorded on the tape
        with tape.stop_recording():
            g_nll, g_gen = (tape.gradient(share, last_layer) for share in shares)
        ctx = distribute.replica_context()
        if ctx is not None:
            g_nll, g_gen = ctx.all_reduce(tf.distribute.ReduceOp.SUM, [g_nll, g_gen])
        ratio = tf.norm(tf.cast(g_nll, tf.float32)) / (tf.norm(tf.cast(g_gen, tf.float32)) + 1e-4)
        return tf.stop_gradient(tf.clip_by_value(ratio, 0.0, MAX_ADAPTIVE_WEIGHT) * self.adversarial_weight)

    @property
    def persistent_tape(self) -> bool:
        """Whether `losses` takes gradients of its own from the step's tape (the adaptive weight)."""
        return self.discriminator is not None

    def losses(self, model, images, out, losses, tape):
        """Inside the autoencoder's step (`ImageAutoencoder.train_step`), recorded on its `tape`:
        `losses` (the model's own, of the forward pass `out`) under this objective, and the
        step's logs for `finish_step`."""
        x = tf.cast(images, tf.float32)
        mean = out["mean"]
        own = losses["reconstruction_loss"]
        rec = tf.reduce_mean(tf.abs(mean - x)) * 2.0 if self.reconstruction == "l1" else own
        nll = rec
        logs = {}
        if self.lpips is not None:
            perceptual = self._perceptual(model, x, mean)
            nll += self.perceptual_weight * perceptual
            logs[PERCEPTUAL_KEY] = perceptual
        total = losses["loss"] - own + nll
        if self.discriminator is not None:
            logits_fake = self.discriminator(mean, training=True)
            g_loss = -tf.reduce_mean(logits_fake)
            weight = self._adaptive_weight(tape, nll, g_loss, model.last_layer_kernel())
            disc_factor = self._disc_factor(model)
            total += weight * disc_factor * g_loss
            logs.update(generator_loss=g_loss, adaptive_weight=weight, disc_factor=disc_factor)
        return dict(losses, loss=total, reconstruction_loss=rec), logs

    def _perceptual(self, model, x, mean):
        """Mean LPIPS(x, mean); 0 (and not computed) before `perceptual_start` steps."""
        if not self.perceptual_start:
            return tf.reduce_mean(self.lpips(x, mean))
        return tf.cond(
            model.optimizer.iterations >= self.perceptual_start,
            lambda: tf.reduce_mean(self.lpips(x, mean)),
            lambda: tf.zeros([], tf.float32),
        )

    def _disc_factor(self, model):
        """1 once the autoencoder has taken `disc_start` steps, else 0 (read before its update)."""
        return tf.cast(model.optimizer.iterations >= self.disc_start, tf.float32)

    def finish_step(self, images, out, logs) -> dict:
        """After the autoencoder's update: the discriminator's step (on the reconstructions of the
        same forward pass, with the disc factor of that step); returns the trackers' results."""
        logs = dict(logs)
        if self.discriminator is not None:
            disc_factor = logs.pop("disc_factor")
            logs.update(
                self._discriminator_step(tf.cast(images, tf.float32), tf.stop_gradient(out["mean"]), disc_factor)
            )
        for key, value in logs.items():
            self.trackers[key].update_state(value)
        return {k: t.result() for k, t in self.trackers.items()}

    def _discriminator_step(self, real, fake, disc_factor) -> dict:
        disc = self.discriminator
        with tf.GradientTape() as tape:
            logits_real = disc(real, training=True)
            logits_fake = disc(fake, training=True)
            hinge = 0.5 * (
                tf.reduce_mean(tf.nn.relu(1.0 - logits_real)) + tf.reduce_mean(tf.nn.relu(1.0 + logits_fake))
            )
            d_loss = disc_factor * hinge
            scaled = self.discriminator_optimizer.scale_loss(distribute.replica_scaled(d_loss))
        variables = disc.trainable_variables
        self.discriminator_optimizer.apply_gradients(zip(tape.gradient(scaled, variables), variables))
        return {
            "discriminator_loss": d_loss,
            "logits_real": tf.reduce_mean(logits_real),
            "logits_fake": tf.reduce_mean(logits_fake),
        }
