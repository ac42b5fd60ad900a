"""Every configuration in one place: the models', the priors' and the pipeline's run recipes.

    get_config("fashion_mnist")     -> VQVAEConfig   (CONFIG_NAMES: fashion_mnist, cifar10, vqvae_64,
                                                      imagenet128, vqvae_256, tiny)
    get_prior_config("default")     -> PriorConfig   (PRIOR_CONFIG_NAMES: default, quick, imagenet128)
    get_recipe("quick")             -> Recipe        (RECIPE_NAMES: default, quick): what train.pipeline runs

    python -m train.train_vqvae --workdir=/tmp/vq --config=fashion_mnist
    python -m train.train_vqvae --workdir=/tmp/vq --config=cifar10 --dataset=cifar10
    python -m train.train_vqvae --workdir=/tmp/vq --config=vqvae_64 --dataset=image_folder --data_dir=photos/
    python -m train.pipeline --workdir=/tmp/run --recipe=quick

The colour configs by image size: cifar10 (32 px), vqvae_64, imagenet128 (128 px), vqvae_256. A
config's `image_shape` is a default: training takes the shape from the data (``--image_size``,
``--channels``) and refuses one that the config's `downsample` does not divide.

A config's network fields are the model's constructor arguments, read from the model's signature
(`VQVAE.__init__`, `PixelCNN.__init__`), so a field and its default are written once, in the model.
`tiny` is for tests (seconds on a CPU). A new model family adds its config class and names here.
"""

from __future__ import annotations

import dataclasses
import inspect
import math

import keras

from vqvae_tf.layers.fsq import validate_levels
from vqvae_tf.models.pixelcnn import PixelCNN
from vqvae_tf.models.vqvae import ARCHITECTURE_ARGS, RUN_ARGS, VQVAE
from vqvae_tf.utils import checks

LR_SCHEDULES = ("constant", "cosine")


def _default(model_cls, name: str):
    """The default of constructor argument `name` of `model_cls`."""
    return inspect.signature(model_cls.__init__).parameters[name].default


def _constructor_fields(model_cls, exclude) -> list:
    """Dataclass fields for `model_cls`'s constructor arguments (minus `exclude`), with its defaults."""
    params = inspect.signature(model_cls.__init__).parameters
    return [
        (name, object, dataclasses.field(default=p.default))
        for name, p in params.items()
        if name not in ("self", "kwargs", *exclude)
    ]


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


class _VQVAEConfigMethods(TrainingConfig):
    @property
    def latent_shape(self):
        h, w, _ = self.image_shape
        return (h // self.downsample, w // self.downsample)

    @property
    def prior_grid_shape(self):
        """The grid its prior models (`VQVAE.prior_grid_shape`): (h, w * depth) for residual VQ."""
        h, w = self.latent_shape
        return (h, w * (self.num_quantizers if self.quantizer == "rvq" else 1))

    def build(self, data_variance: float = 1.0, seed: int = 0) -> VQVAE:
        """A new, untrained `VQVAE` of this config's network (the one way to build from a named
        config: ``get_config("cifar10").build(data_variance=...)``; pretrained models come from
        `VQVAE.from_preset`)."""
        return VQVAE(**self.network_kwargs(), data_variance=data_variance, seed=seed)

    def network_kwargs(self) -> dict:
        """The VQVAE constructor arguments of this config (all but the data variance and seed)."""
        return {name: getattr(self, name) for name, _, _ in _NETWORK_FIELDS}

    def architecture(self) -> dict:
        """The fields that shape the variables (a workdir trained with other values is refused)."""
        return {name: self.to_dict()[name] for name in ARCHITECTURE_ARGS}

    def validate(self):
        self.image_shape = tuple(int(s) for s in self.image_shape)
        self.fsq_levels = tuple(self.fsq_levels)
        if self.quantizer == "fsq":  # FSQ's channels and code count follow from its levels
            self.fsq_levels = validate_levels(self.fsq_levels)
            self.embedding_dim, self.num_embeddings = len(self.fsq_levels), math.prod(self.fsq_levels)
        VQVAE.validate_arguments(self.network_kwargs())
        self.validate_training()
        return self

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["image_shape"] = list(self.image_shape)
        d["fsq_levels"] = list(self.fsq_levels)
        return d

    @classmethod
    def from_dict(cls, d: dict):
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"Unknown config fields: {sorted(unknown)}.")
        return cls(**d).validate()


# VQVAE's constructor arguments that a config holds: all but the data variance and the seed.
_NETWORK_FIELDS = _constructor_fields(VQVAE, exclude=RUN_ARGS)
VQVAEConfig = dataclasses.make_dataclass(
    "VQVAEConfig",
    [
        ("name", str, dataclasses.field(default="custom")),
        ("dataset", str, dataclasses.field(default="fashion_mnist")),
        *_NETWORK_FIELDS,
        ("steps", int, dataclasses.field(default=6000)),
        ("jit_compile", bool, dataclasses.field(default=False)),
    ],
    bases=(_VQVAEConfigMethods,),
)
VQVAEConfig.__module__ = __name__
VQVAEConfig.__doc__ = """A VQ-VAE training configuration: its name, the dataset, the network (VQVAE's constructor
arguments, with VQVAE's defaults: the `fashion_mnist` network), and the optimisation
(`TrainingConfig`'s fields, 6000 steps, plus `jit_compile`)."""


@dataclasses.dataclass
class PriorConfig(TrainingConfig):
    """A PixelCNN prior's training configuration. Measured on Fashion-MNIST codes (BENCHMARKS.md):
    the default reaches 3.44 test bits/code in 5000 steps, ~9 min on 2 CPU cores; 64 filters / k=5
    was 3x slower per step for a similar curve per minute. The network fields and their defaults
    are PixelCNN's (`num_filters`, `num_layers`, `kernel_size`, `dropout`); `conditional` asks for
    a class-conditional prior (the class count comes from the codes)."""

    num_filters: int = _default(PixelCNN, "num_filters")
    num_layers: int | None = _default(PixelCNN, "num_layers")
    kernel_size: int = _default(PixelCNN, "kernel_size")
    dropout: float = _default(PixelCNN, "dropout")
    conditional: bool = False

    def validate(self) -> "PriorConfig":
        PixelCNN.validate_stack(self.num_filters, self.num_layers, self.kernel_size, self.dropout)
        self.validate_training()
        return self

    def architecture(self) -> dict:
        return {k: getattr(self, k) for k in ("num_filters", "num_layers", "kernel_size", "conditional", "dropout")}

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


def _colour(dataset: str, size: int, hiddens: int, residual_hiddens: int, **fields) -> dict:
    """A colour config: size x size x 3 images, K=512 codes of D=64 (the paper's and Sonnet's)."""
    return dict(
        dataset=dataset,
        image_shape=(size, size, 3),
        num_embeddings=512,
        embedding_dim=64,
        num_hiddens=hiddens,
        num_residual_hiddens=residual_hiddens,
        **fields,
    )


_CONFIGS = {
    # 28x28x1 -> 7x7 codes: VQVAE's defaults. Small K with EMA codebook, k-means init and
    # dead-code restart keeps every code in use (see BENCHMARKS.md).
    "fashion_mnist": dict(),
    # Sonnet's CIFAR-10 example: 32x32x3 -> 8x8, 128 hidden, 32 residual hidden, Adam 3e-4, batch 32.
    "cifar10": _colour("cifar10", 32, 128, 32, learning_rate=3e-4, batch_size=32, steps=10_000),
    # 64x64x3 -> 16x16: Sonnet's network on 4x the pixels, batch 64.
    "vqvae_64": _colour("image_folder", 64, 128, 32, learning_rate=3e-4, batch_size=64, steps=50_000),
    # The paper's ImageNet setting: 128x128x3 -> 32x32, 256 hidden, Adam 2e-4, batch 128.
    "imagenet128": _colour("imagenet2012", 128, 256, 256, learning_rate=2e-4, batch_size=128, steps=250_000),
    # 256x256x3 -> 32x32 (one more halving, so the prior sees the imagenet128 grid), batch 32.
    "vqvae_256": _colour("image_folder", 256, 256, 256, downsample=8, learning_rate=2e-4, batch_size=32, steps=250_000),
    # For tests: seconds on a CPU.
    "tiny": dict(
        num_embeddings=16,
        embedding_dim=8,
        num_hiddens=16,
        num_residual_hiddens=8,
        num_residual_layers=1,
        batch_size=16,
        steps=20,
        learning_rate=2e-3,
    ),
}
_PRIOR_CONFIGS = {
    "default": dict(),
    # A first look: a shallower, shorter prior; 5x5 kernels and the fewest blocks that see the
    # whole grid (3 on 7x7 codes, 4 on 8x8).
    "quick": dict(kernel_size=5, num_layers=None, steps=600),
    # For 32x32 code grids (the imagenet128 VQ-VAE): 16 blocks of 5x5, 128 filters.
    "imagenet128": dict(num_filters=128, kernel_size=5, num_layers=None, learning_rate=2e-4, batch_size=64),
}
_RECIPES = {
    "default": dict(vqvae={}, prior="default"),
    "quick": dict(vqvae={"steps": 800}, prior="quick"),
}

CONFIG_NAMES = tuple(_CONFIGS)
PRIOR_CONFIG_NAMES = tuple(_PRIOR_CONFIGS)
RECIPE_NAMES = tuple(_RECIPES)


def _lookup(table: dict, name: str, what: str) -> dict:
    if name not in table:
        raise ValueError(f"Unknown {what} {name!r}; choose one of {', '.join(table)}.")
    return table[name]


def get_config(name: str) -> VQVAEConfig:
    """A fresh VQ-VAE config `name` (one of `CONFIG_NAMES`)."""
    return VQVAEConfig(name=name, **_lookup(_CONFIGS, name, "config")).validate()


def get_prior_config(name: str = "default") -> PriorConfig:
    """A fresh prior config `name` (one of `PRIOR_CONFIG_NAMES`)."""
    return PriorConfig(**_lookup(_PRIOR_CONFIGS, name, "prior config")).validate()


def get_recipe(name: str, dataset: str | None = None, config: str | None = None) -> Recipe:
    """A pipeline recipe (one of `RECIPE_NAMES`) for `dataset` (default fashion_mnist) with the
    VQ-VAE config `config`: by default the dataset's own when there is one (`cifar10`), else the
    Fashion-MNIST one."""
    recipe = _lookup(_RECIPES, name, "pipeline recipe")
    dataset = dataset or "fashion_mnist"
    vqvae = get_config(config or (dataset if dataset in _CONFIGS else "fashion_mnist"))
    vqvae = dataclasses.replace(vqvae, dataset=dataset, **recipe["vqvae"]).validate()
    prior = dataclasses.replace(get_prior_config(recipe["prior"]), conditional=True)
    return Recipe(vqvae=vqvae, prior=prior)
