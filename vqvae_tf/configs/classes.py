"""The configuration types: `TrainingConfig` (optimisation), the autoencoder configs made from
their models' constructors (`VQVAEConfig`, `VQVAE2Config`, with the training losses of
`vqvae_tf.losses.objective.ImageLossConfig`), `PriorConfig` and `Recipe`. The named configs are in
`vqvae_tf.configs` (this package's __init__)."""

from __future__ import annotations

import dataclasses
import inspect

import keras

from vqvae_tf.layers import networks
from vqvae_tf.layers.quantizers import build, option_fields
from vqvae_tf.losses.objective import ImageLossConfig
from vqvae_tf.models import priors
from vqvae_tf.models.autoencoders import vqvae2 as vqvae2_model
from vqvae_tf.models.autoencoders.base import RUN_ARGS
from vqvae_tf.models.autoencoders.vqvae import ARCHITECTURE_ARGS, VQVAE
from vqvae_tf.models.autoencoders.vqvae2 import VQVAE2
from vqvae_tf.models.priors.pixelcnn import PixelCNN
from vqvae_tf.utils import checks

# What a run trains: everything, or the decoder alone (encoder and codebook frozen, so the codes,
# and the priors trained on them, stay valid: fine-tuning a pretrained tokenizer's decoder).
TRAINABLE = ("all", "decoder")
# A config's jit_compile: XLA off, on, or chosen by timing a few steps each way (training.loop).
JIT_COMPILE_CHOICES = (False, True, "auto")

LR_SCHEDULES = ("constant", "cosine")

# A prior config's networks (`PriorConfig.prior`): the registered one-grid prior families.
PRIOR_NETWORKS = priors.network_names()


def _default(model_cls, name: str):
    """The default of constructor argument `name` of `model_cls`."""
    return inspect.signature(model_cls.__init__).parameters[name].default


def _constructor_fields(model_cls, exclude) -> list:
    """Dataclass fields for `model_cls`'s constructor arguments (minus `exclude`), with its defaults,
    and, for a model that takes quantizer options by name (`VQVAE`), one per registered option."""
    params = inspect.signature(model_cls.__init__).parameters
    fields = [
        (name, object, dataclasses.field(default=p.default))
        for name, p in params.items()
        if name not in ("self", "kwargs", *exclude)
    ]
    if getattr(model_cls, "takes_quantizer_options", False):
        fields += [(name, object, dataclasses.field(default=o.default)) for name, o in option_fields().items()]
    return fields


@dataclasses.dataclass
class TrainingConfig:
    """The optimisation fields every trained model shares (Adam, optional cosine decay)."""

    batch_size: int = 128
    steps: int = 5000
    learning_rate: float = 1e-3
    lr_schedule: str = "cosine"  # "constant" or "cosine" (decay to 10% over `steps`)

    def validate_training(self) -> None:
        checks.positive_int("batch_size", self.batch_size)
        checks.positive_int("steps", self.steps)
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}.")
        checks.one_of("lr_schedule", self.lr_schedule, LR_SCHEDULES)

    def make_optimizer(self) -> keras.optimizers.Optimizer:
        """Adam at `learning_rate`, decayed to 10% over `steps` by a cosine when `lr_schedule` says so."""
        lr = self.learning_rate
        if self.lr_schedule == "cosine":
            lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=self.steps, alpha=0.1)
        return keras.optimizers.Adam(lr)


class _AutoencoderConfigMethods(TrainingConfig, ImageLossConfig):
    """What the autoencoder configs share; a subclass names its model (`model`, `model_cls`), the
    network fields (the constructor's arguments) and those that shape the variables. The training
    losses' fields (reconstruction_loss, perceptual_weight, adversarial_weight, disc_*) are
    `ImageLossConfig`'s; `make_objective(image_shape)` builds them for a training run."""

    model = "vqvae"
    model_cls = VQVAE
    _network_fields: list = []
    _architecture_args: tuple = ()

    @property
    def total_downsample(self) -> int:
        """What the image size must be a multiple of."""
        return self.downsample

    @property
    def downsample_text(self) -> str:
        """`total_downsample` as the config's fields make it (for errors)."""
        return f"downsample={self.downsample}"

    def build(self, data_variance: float = 1.0, seed: int = 0):
        """A new, untrained model of this config's network (the one way to build from a named
        config: ``get_config("cifar10").build(data_variance=...)``; pretrained models come from
        `from_preset`)."""
        return self.model_cls(**self.network_kwargs(), data_variance=data_variance, seed=seed)

    def network_kwargs(self) -> dict:
        """The model's constructor arguments of this config (all but the data variance and seed)."""
        return {name: getattr(self, name) for name, _, _ in self._network_fields}

    def architecture(self) -> dict:
        """The fields that shape the variables (a workdir trained with other values is refused),
        with a discriminator's when the losses have one."""
        d = self.to_dict()
        fields = {name: d[name] for name in ("model", *self._architecture_args)}
        if self.adversarial:  # compared only when there is one: a plain run may resume older workdirs
            fields["discriminator"] = d["discriminator"]
        fields["trainable"] = self.trainable  # (which variables the optimizer holds state for)
        return fields

    def prior_grids(self) -> dict:
        """{name: grid} its prior models, as the model computes them from its arguments."""
        return self.model_cls.prior_grid_shapes(self.network_kwargs())

    def validate(self, check_image_size: bool = True):
        """The config, checked (a ValueError names the field). `check_image_size=False` leaves out
        the losses' minimum image size, for a config whose image shape the data will still set
        (`train_vqvae_lib.fit_to_data` validates again)."""
        self.image_shape = tuple(int(s) for s in self.image_shape)
        self.model_cls.validate_arguments(self.network_kwargs())
        self.validate_training()
        self.validate_losses()
        if check_image_size:
            self.check_image_size(self.image_shape)
        checks.one_of("trainable", self.trainable, TRAINABLE)
        if self.trainable == "decoder" and not hasattr(self.model_cls, "freeze_codes"):
            raise ValueError(f"trainable='decoder' is not supported by {self.model_cls.__name__}.")
        if self.jit_compile not in JIT_COMPILE_CHOICES or not isinstance(self.jit_compile, (bool, str)):
            raise ValueError(f"jit_compile must be true, false or 'auto', got {self.jit_compile!r}.")
        return self

    def to_dict(self) -> dict:
        """The fields, and `model` (which `config_from_dict` reads back)."""
        d = dataclasses.asdict(self)
        d["image_shape"] = list(self.image_shape)
        d["model"] = self.model
        d["discriminator"] = self.discriminator_text()  # derived: `from_dict` drops it
        return d

    @classmethod
    def from_dict(cls, d: dict):
        d = dict(d)
        model = d.pop("model", cls.model)
        d.pop("discriminator", None)
        if model != cls.model:
            raise ValueError(f"A {model} config cannot make a {cls.__name__}: use configs.config_from_dict.")
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"Unknown config fields: {sorted(unknown)}.")
        return cls(**d).validate()


class _VQVAEConfigMethods(_AutoencoderConfigMethods):
    @property
    def latent_shape(self):
        h, w, _ = self.image_shape
        return (h // self.downsample, w // self.downsample)

    @property
    def prior_grid_shape(self):
        """The grid its prior models (`VQVAE.prior_grid_shape`): (h, w * depth) for residual VQ."""
        return self.prior_grids()["codes"]

    def validate(self, check_image_size: bool = True):
        # The network's options with their defaults filled in (as the model keeps them).
        self.network_options = networks.get(self.network).canonical_options(self.network_options)
        # Some quantizers' options fix K and D (FSQ's levels, LFQ's bits): the config follows them.
        for name, value in build.option_values(self.network_kwargs()).items():  # int lists as tuples
            setattr(self, name, value)
        self.num_embeddings, self.embedding_dim, _ = self.model_cls.codebook_geometry(self.network_kwargs())
        return super().validate(check_image_size)

    def to_dict(self) -> dict:
        d = super().to_dict()
        d.update({n: list(d[n]) for n, o in option_fields().items() if o.type == "int_list" and d.get(n) is not None})
        return d


class _VQVAE2ConfigMethods(_AutoencoderConfigMethods):
    @property
    def total_downsample(self) -> int:
        return self.downsample * self.top_downsample

    @property
    def downsample_text(self) -> str:
        return f"downsample * top_downsample = {self.total_downsample}"


def _config_class(name, model_cls, methods, architecture_args, run_args, steps, doc):
    fields = _constructor_fields(model_cls, exclude=run_args)
    cls = dataclasses.make_dataclass(
        name,
        [
            ("name", str, dataclasses.field(default="custom")),
            ("dataset", str, dataclasses.field(default="fashion_mnist")),
            *fields,
            ("steps", int, dataclasses.field(default=steps)),
            ("jit_compile", bool | str, dataclasses.field(default=False)),  # or "auto"
            ("trainable", str, dataclasses.field(default="all")),  # or "decoder" (`TRAINABLE`)
        ],
        bases=(methods,),
    )
    cls._network_fields = fields
    cls._architecture_args = architecture_args
    cls.model_cls = model_cls
    cls.model = model_cls.model_name  # (the autoencoder's registered name)
    cls.__module__ = __name__
    cls.__doc__ = doc
    return cls


VQVAEConfig = _config_class(
    "VQVAEConfig",
    VQVAE,
    _VQVAEConfigMethods,
    ARCHITECTURE_ARGS,
    RUN_ARGS,
    6000,
    """A VQ-VAE training configuration: its name, the dataset, the network (VQVAE's constructor
arguments, with VQVAE's defaults: the `fashion_mnist` network), and the optimisation
(`TrainingConfig`'s fields, 6000 steps, plus `jit_compile`).""",
)
VQVAE2Config = _config_class(
    "VQVAE2Config",
    VQVAE2,
    _VQVAE2ConfigMethods,
    vqvae2_model.ARCHITECTURE_ARGS,
    RUN_ARGS,
    20_000,
    """A VQ-VAE-2 training configuration: its name, the dataset, the network (VQVAE2's constructor
arguments and defaults) and the optimisation (`TrainingConfig`'s fields, plus `jit_compile`).""",
)
CONFIG_CLASSES = {cls.model: cls for cls in (VQVAEConfig, VQVAE2Config)}
MODELS = tuple(CONFIG_CLASSES)


def config_from_dict(d: dict):
    """The config of `to_dict`'s output (e.g. a stage's config.json), of the class its `model`
    names (a record without one predates VQ-VAE-2: a VQ-VAE)."""
    model = d.get("model", "vqvae")
    checks.one_of("model", model, MODELS)
    return CONFIG_CLASSES[model].from_dict(d)


@dataclasses.dataclass
class PriorConfig(TrainingConfig):
    """A prior's training configuration. `prior` names its network (`PRIOR_NETWORKS`): a gated
    "pixelcnn" (VQ-VAE-2's codes: one per level), a causal "transformer" or "maskgit". Measured on
    Fashion-MNIST codes (BENCHMARKS.md): the PixelCNN default reaches 3.44 test bits/code in 5000
    steps, ~9 min on 2 CPU cores; 64 filters / k=5 was 3x slower per step for a similar curve per
    minute. The network fields and their defaults are PixelCNN's (`num_filters`, `num_layers`,
    `kernel_size`, `dropout`); a transformer takes `num_filters` as its width and `num_layers` as
    its blocks (None: 4), and has no kernel. `conditional` asks for a class-conditional prior
    (the class count comes from the codes)."""

    prior: str = "pixelcnn"
    num_filters: int = _default(PixelCNN, "num_filters")
    num_layers: int | None = _default(PixelCNN, "num_layers")
    kernel_size: int = _default(PixelCNN, "kernel_size")
    dropout: float = _default(PixelCNN, "dropout")
    conditional: bool = False
    attention_blocks: int = 0  # VQ-VAE-2's top prior: causal self-attention blocks (PixelCNN)

    def validate(self) -> "PriorConfig":
        checks.one_of("prior", self.prior, priors.network_names())
        PixelCNN.validate_stack(self.num_filters, self.num_layers, self.kernel_size, self.dropout)
        if self.attention_blocks < 0:
            raise ValueError(f"attention_blocks must be >= 0, got {self.attention_blocks}.")
        self.validate_training()
        return self

    def architecture(self) -> dict:
        return {
            k: getattr(self, k)
            for k in ("prior", "num_filters", "num_layers", "kernel_size", "conditional", "dropout", "attention_blocks")
        }

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Recipe:
    """What `train.pipeline` runs: the VQ-VAE and prior configurations and the run's cadence.
    The recipes' priors are class-conditional; the pipeline drops that for a dataset without labels."""

    vqvae: VQVAEConfig
    prior: PriorConfig
    log_every: int = 500
    checkpoint_every: int = 1000
