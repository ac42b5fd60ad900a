"""Every configuration in one place: the models', the priors' and the pipeline's run recipes.

    get_config("fashion_mnist")     -> VQVAEConfig   (CONFIG_NAMES: fashion_mnist, cifar10, vqvae_64,
                                                      imagenet128, vqvae_256, tiny)
    get_config("vqvae2_64")         -> VQVAE2Config  (vqvae2_64, vqvae2_128, vqvae2_256, vqvae2_tiny)
    get_prior_config("default")     -> PriorConfig   (PRIOR_CONFIG_NAMES: default, quick, vqvae2, imagenet128)
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

import keras

from vqvae_tf.layers.quantizers import build, option_fields
from vqvae_tf.models.pixelcnn import PixelCNN
from vqvae_tf.models.vqvae import ARCHITECTURE_ARGS, RUN_ARGS, VQVAE
from vqvae_tf.models.vqvae2 import VQVAE2
from vqvae_tf.models.vqvae2 import model as vqvae2_model
from vqvae_tf.utils import checks

# A config's jit_compile: XLA off, on, or chosen by timing a few steps each way (training.loop).
JIT_COMPILE_CHOICES = (False, True, "auto")

LR_SCHEDULES = ("constant", "cosine")


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


class _AutoencoderConfigMethods(TrainingConfig):
    """What the autoencoder configs share; a subclass names its model (`model`, `model_cls`), the
    network fields (the constructor's arguments) and those that shape the variables."""

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
        """The fields that shape the variables (a workdir trained with other values is refused)."""
        return {name: self.to_dict()[name] for name in ("model", *self._architecture_args)}

    def prior_grids(self) -> dict:
        """{name: grid} its prior models, as the model computes them from its arguments."""
        return self.model_cls.prior_grid_shapes(self.network_kwargs())

    def validate(self):
        self.image_shape = tuple(int(s) for s in self.image_shape)
        self.model_cls.validate_arguments(self.network_kwargs())
        self.validate_training()
        if self.jit_compile not in JIT_COMPILE_CHOICES or not isinstance(self.jit_compile, (bool, str)):
            raise ValueError(f"jit_compile must be true, false or 'auto', got {self.jit_compile!r}.")
        return self

    def to_dict(self) -> dict:
        """The fields, and `model` (which `config_from_dict` reads back)."""
        d = dataclasses.asdict(self)
        d["image_shape"] = list(self.image_shape)
        d["model"] = self.model
        return d

    @classmethod
    def from_dict(cls, d: dict):
        d = dict(d)
        model = d.pop("model", cls.model)
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

    def validate(self):
        # Some quantizers' options fix K and D (FSQ's levels, LFQ's bits): the config follows them.
        for name, value in build.option_values(self.network_kwargs()).items():  # int lists as tuples
            setattr(self, name, value)
        self.num_embeddings, self.embedding_dim, _ = self.model_cls.codebook_geometry(self.network_kwargs())
        return super().validate()

    def to_dict(self) -> dict:
        d = super().to_dict()
        d.update({n: list(d[n]) for n, o in option_fields().items() if o.type == "int_list" and d.get(n) is not None})
        return d


class _VQVAE2ConfigMethods(_AutoencoderConfigMethods):
    model = "vqvae2"
    model_cls = VQVAE2

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
        ],
        bases=(methods,),
    )
    cls._network_fields = fields
    cls._architecture_args = architecture_args
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
    vqvae2_model.RUN_ARGS,
    20_000,
    """A VQ-VAE-2 training configuration: its name, the dataset, the network (VQVAE2's constructor
arguments and defaults) and the optimisation (`TrainingConfig`'s fields, plus `jit_compile`).""",
)
CONFIG_CLASSES = {"vqvae": VQVAEConfig, "vqvae2": VQVAE2Config}
MODELS = tuple(CONFIG_CLASSES)


def config_from_dict(d: dict):
    """The config of `to_dict`'s output (e.g. a stage's config.json), of the class its `model`
    names (a record without one predates VQ-VAE-2: a VQ-VAE)."""
    model = d.get("model", "vqvae")
    checks.one_of("model", model, MODELS)
    return CONFIG_CLASSES[model].from_dict(d)


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
    attention_blocks: int = 0  # VQ-VAE-2's top prior: causal self-attention blocks (PixelCNN)

    def validate(self) -> "PriorConfig":
        PixelCNN.validate_stack(self.num_filters, self.num_layers, self.kernel_size, self.dropout)
        if self.attention_blocks < 0:
            raise ValueError(f"attention_blocks must be >= 0, got {self.attention_blocks}.")
        self.validate_training()
        return self

    def architecture(self) -> dict:
        return {
            k: getattr(self, k)
            for k in ("num_filters", "num_layers", "kernel_size", "conditional", "dropout", "attention_blocks")
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


def _vqvae2(size: int, **fields) -> dict:
    """A VQ-VAE-2 config for size x size x 3 images, VQVAE2's network (the paper's), Adam 3e-4."""
    return dict(model="vqvae2", dataset="image_folder", image_shape=(size, size, 3), learning_rate=3e-4, **fields)


# The test configs' network and optimisation (`tiny`, `vqvae2_tiny`): seconds on a CPU.
_TINY = dict(
    num_embeddings=16,
    embedding_dim=8,
    num_hiddens=16,
    num_residual_hiddens=8,
    num_residual_layers=1,
    batch_size=16,
    steps=20,
    learning_rate=2e-3,
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
    # VQ-VAE-2 (arXiv:1906.00446, appendix A: 128 hidden, 64 residual hidden, 2 residual blocks,
    # K=512, D=64 at both levels, Adam 3e-4, batch 128): codes at 1/4 (bottom) and 1/8 (top).
    # 64x64x3 -> 8x8 top, 16x16 bottom.
    "vqvae2_64": _vqvae2(64, batch_size=64, steps=50_000),
    "vqvae2_128": _vqvae2(128, batch_size=128, steps=100_000),  # 16x16 top, 32x32 bottom
    "vqvae2_256": _vqvae2(256, batch_size=128, steps=250_000),  # the paper's ImageNet setting: 32x32, 64x64
    # For tests: 32x32x1 -> 4x4 top, 8x8 bottom, seconds on a CPU.
    "vqvae2_tiny": dict(model="vqvae2", image_shape=(32, 32, 1), **_TINY),
    # For tests: seconds on a CPU.
    "tiny": dict(_TINY),
}
_PRIOR_CONFIGS = {
    "default": dict(),
    # A first look: a shallower, shorter prior; 5x5 kernels and the fewest blocks that see the
    # whole grid (3 on 7x7 codes, 4 on 8x8).
    "quick": dict(kernel_size=5, num_layers=None, steps=600),
    # VQ-VAE-2's two grids: 5x5 kernels, each level's stack sized to its grid, 64 filters.
    "vqvae2": dict(num_filters=64, kernel_size=5, num_layers=None),
    # For 32x32 code grids (the imagenet128 VQ-VAE): 16 blocks of 5x5, 128 filters.
    "imagenet128": dict(num_filters=128, kernel_size=5, num_layers=None, learning_rate=2e-4, batch_size=64),
}
_RECIPES = {
    "default": dict(vqvae={}, prior="default"),
    "quick": dict(vqvae={"steps": 800}, prior="quick"),
}

CONFIG_NAMES = tuple(_CONFIGS)
# The config each model starts from when only --model is given.
DEFAULT_CONFIGS = {"vqvae": "fashion_mnist", "vqvae2": "vqvae2_64"}
PRIOR_CONFIG_NAMES = tuple(_PRIOR_CONFIGS)
RECIPE_NAMES = tuple(_RECIPES)


def _lookup(table: dict, name: str, what: str) -> dict:
    if name not in table:
        raise ValueError(f"Unknown {what} {name!r}; choose one of {', '.join(table)}.")
    return table[name]


def get_config(name: str | None = None, model: str | None = None):
    """A fresh config `name` (one of `CONFIG_NAMES`): a `VQVAEConfig`, or a `VQVAE2Config` for
    the vqvae2_* ones. `model` ("vqvae" or "vqvae2") picks `DEFAULT_CONFIGS[model]` without a
    name, and must be the named config's model with one."""
    if model is not None:
        checks.one_of("model", model, MODELS)
    fields = dict(_lookup(_CONFIGS, name or DEFAULT_CONFIGS[model or "vqvae"], "config"))
    config_model = fields.pop("model", "vqvae")
    if model is not None and model != config_model:
        raise ValueError(
            f"Config {name!r} is a {config_model} config, not a {model} one: choose one of "
            f"{', '.join(n for n, c in _CONFIGS.items() if c.get('model', 'vqvae') == model)}, or drop --model."
        )
    return CONFIG_CLASSES[config_model](name=name or DEFAULT_CONFIGS[config_model], **fields).validate()


def get_prior_config(name: str = "default") -> PriorConfig:
    """A fresh prior config `name` (one of `PRIOR_CONFIG_NAMES`)."""
    return PriorConfig(**_lookup(_PRIOR_CONFIGS, name, "prior config")).validate()


def get_recipe(name: str, dataset: str | None = None, config: str | None = None, model: str | None = None) -> Recipe:
    """A pipeline recipe (one of `RECIPE_NAMES`) for `dataset` (default fashion_mnist) with the
    config `config`: by default the dataset's own when there is one (`cifar10`), else the
    Fashion-MNIST one; with `model="vqvae2"`, `DEFAULT_CONFIGS["vqvae2"]`. A VQ-VAE-2's prior
    sizes each level's stack to its grid."""
    recipe = _lookup(_RECIPES, name, "pipeline recipe")
    dataset = dataset or "fashion_mnist"
    if config is None and model in (None, "vqvae"):
        config = dataset if dataset in _CONFIGS else "fashion_mnist"
    vqvae = get_config(config, model)
    vqvae = dataclasses.replace(vqvae, dataset=dataset, **recipe["vqvae"]).validate()
    prior = dataclasses.replace(get_prior_config(recipe["prior"]), conditional=True)
    if vqvae.model == "vqvae2":
        prior.num_layers = None
    return Recipe(vqvae=vqvae, prior=prior)
