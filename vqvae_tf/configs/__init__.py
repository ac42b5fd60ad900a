"""Every configuration in one place: the models', the priors' and the pipeline's run recipes.

    get_config("fashion_mnist")     -> VQVAEConfig   (CONFIG_NAMES: fashion_mnist, cifar10, vqvae_64,
                                                      imagenet128, vqvae_256, vqgan_64, vqgan_128,
                                                      taming_64, clipart_64, clipart_64_fsq, tiny)
    get_config("vqvae2_64")         -> VQVAE2Config  (vqvae2_64, vqvae2_128, vqvae2_256, vqvae2_tiny)
    get_prior_config("default")     -> PriorConfig   (PRIOR_CONFIG_NAMES: default, quick, vqvae2, imagenet128,
                                                      transformer, maskgit, clipart)
    get_recipe("quick")             -> Recipe        (RECIPE_NAMES: default, quick, clipart): what train.pipeline runs

    python -m train.train_vqvae --workdir=/tmp/vq --config=fashion_mnist
    python -m train.train_vqvae --workdir=/tmp/vq --config=cifar10 --dataset=cifar10
    python -m train.train_vqvae --workdir=/tmp/vq --config=vqvae_64 --dataset=image_folder --data_dir=photos/
    python -m train.pipeline --workdir=/tmp/run --recipe=quick

The colour configs by image size: cifar10 (32 px), vqvae_64, imagenet128 (128 px), vqvae_256. A
config's `image_shape` is a default: training takes the shape from the data (``--image_size``,
``--channels``) and refuses one that the config's `downsample` does not divide.

A config's network fields are the model's constructor arguments, read from the model's signature
(`VQVAE.__init__`, `PixelCNN.__init__`), so a field and its default are written once, in the model.
`tiny` is for tests (seconds on a CPU). A new autoencoder adds its config class in classes.py and
its named configs here; a new prior family its prior config (named after it) here.
"""

from __future__ import annotations

import dataclasses

from vqvae_tf.configs.classes import (
    CONFIG_CLASSES,
    JIT_COMPILE_CHOICES,
    LR_SCHEDULES,
    MODELS,
    PRIOR_NETWORKS,
    TRAINABLE,
    PriorConfig,
    Recipe,
    TrainingConfig,
    VQVAE2Config,
    VQVAEConfig,
    config_from_dict,
)
from vqvae_tf.models import priors
from vqvae_tf.utils import checks

__all__ = [
    "CONFIG_CLASSES",
    "CONFIG_NAMES",
    "DEFAULT_CONFIGS",
    "JIT_COMPILE_CHOICES",
    "LR_SCHEDULES",
    "MODELS",
    "TRAINABLE",
    "PRIOR_CONFIG_NAMES",
    "PRIOR_NETWORKS",
    "RECIPE_NAMES",
    "PriorConfig",
    "Recipe",
    "TrainingConfig",
    "VQVAE2Config",
    "VQVAEConfig",
    "config_from_dict",
    "get_config",
    "get_prior_config",
    "get_recipe",
]


def _colour(dataset: str, size: int, hiddens: int, residual_hiddens: int, **fields) -> dict:
    """A colour config: size x size x 3 images, K=512 codes of D=64 (the paper's and Sonnet's) unless
    `fields` say otherwise."""
    return dict(
        dict(
            dataset=dataset,
            image_shape=(size, size, 3),
            num_embeddings=512,
            embedding_dim=64,
            num_hiddens=hiddens,
            num_residual_hiddens=residual_hiddens,
        ),
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

# The VQGAN losses (`losses.objective.ImageLossConfig`'s fields). LPIPS on VGG, as taming's: trained
# on AlexNet's LPIPS, a tokenizer lowers AlexNet's distance but not VGG's, the one reported
# (BENCHMARKS section 10).
_VQGAN = dict(reconstruction_loss="l1", perceptual_weight=1.0, perceptual_net="vgg", adversarial_weight=0.8)

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
    # The VQGAN recipe (Esser et al. 2021: L1 + LPIPS + PatchGAN hinge loss with the adaptive
    # weight, the discriminator from disc_start on). VQGAN's f=16 at 256 px gives 16x16 codes; the
    # same 16x16 grid here: downsample 4 at 64 px, 8 at 128 px (bits per image: 256 codes x log2 K).
    # Widths: VQGAN's base 128 channels; its disc_weight 0.8, perceptual_weight 1.0, Adam 2e-4.
    # K=256 at 64 px keeps a 64x64 image at 2048 code bits; the patch discriminator's receptive
    # field stays about half the image (2 layers: 34 px at 64; 3 layers: 70 px at 128).
    "vqgan_64": _colour(
        "image_folder",
        64,
        128,
        64,
        num_embeddings=256,
        learning_rate=2e-4,
        batch_size=32,
        steps=50_000,
        **_VQGAN,
        disc_layers=2,
        disc_start=10_000,
    ),
    "vqgan_128": _colour(
        "image_folder",
        128,
        128,
        64,
        downsample=8,
        num_embeddings=1024,
        learning_rate=2e-4,
        batch_size=32,
        steps=100_000,
        **_VQGAN,
        disc_layers=3,
        disc_start=20_000,
    ),
    # VQGAN's own network (the "taming" network of the converted checkpoints: GroupNorm ResNet
    # blocks, attention at the lowest resolution and in the middle) with the VQGAN recipe at 64 px:
    # 16x16 codes of K=256 (vqgan_64's budget); levels of 64, 128, 128 channels (VQGAN's f16 has
    # 128, 128, 256, 256, 512), D=64.
    "taming_64": _colour(
        "image_folder",
        64,
        128,
        64,
        network="taming",
        network_options=dict(
            block_out_channels=[64, 128, 128],
            layers_per_block=1,
            down_attention=[False, False, True],
            up_attention=[True, False, False],
            latent_channels=64,
        ),
        num_embeddings=256,
        quantizer="vq",
        learning_rate=2e-4,
        batch_size=32,
        steps=50_000,
        **_VQGAN,
        disc_layers=2,
        disc_start=10_000,
    ),
    # The colour zoo's clip art (`--dataset=clipart`, `--recipe=clipart`; BENCHMARKS section 12):
    # vqgan_64's network and code budget (16x16 codes of K=256: 2048 bits per image), trained on L1
    # alone, then L1 + LPIPS-VGG from `perceptual_start` (a VGG LPIPS step costs 7x a plain one on a
    # CPU; LPIPS without the discriminator beat the full VQGAN recipe at a CPU budget: section 10).
    "clipart_64": _colour(
        "clipart",
        64,
        128,
        64,
        num_embeddings=256,
        learning_rate=3e-4,
        batch_size=32,
        steps=10_000,
        reconstruction_loss="l1",
        perceptual_weight=1.0,
        perceptual_net="vgg",
        perceptual_start=8_500,
    ),
    # The compact colour tokenizer: 8x8 codes of FSQ levels (8, 5, 5, 5) (1000 codes, no codebook to
    # train: 638 bits per image, a quarter of clipart_64's tokens for a prior), trained on L1 alone
    # (its LPIPS phase did not fit this session's CPU budget: BENCHMARKS section 12).
    "clipart_64_fsq": _colour(
        "clipart",
        64,
        128,
        64,
        downsample=8,
        quantizer="fsq",
        fsq_levels=(8, 5, 5, 5),
        learning_rate=3e-4,
        batch_size=32,
        steps=3_500,
        reconstruction_loss="l1",
    ),
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
    # The causal transformer (`--prior=transformer`): width 128, 4 blocks, 4 heads.
    "transformer": dict(prior="transformer", num_filters=128, num_layers=4, learning_rate=5e-4),
    # MaskGIT (`--prior=maskgit`): as the transformer; masked training needs more steps.
    "maskgit": dict(prior="maskgit", num_filters=128, num_layers=4, learning_rate=5e-4),
    # The clip-art recipe's prior (16x16 codes, 22 classes): MaskGIT, 8 parallel steps a grid.
    "clipart": dict(prior="maskgit", num_filters=128, num_layers=4, learning_rate=5e-4, batch_size=64, steps=1200),
}
_RECIPES = {
    "default": dict(vqvae={}, prior="default"),
    "quick": dict(vqvae={"steps": 800}, prior="quick"),
    # Colour: Debian's openclipart-png at 64x64 (`make demo DATA=clipart`), the clipart_64 presets.
    "clipart": dict(vqvae={}, prior="clipart", dataset="clipart"),
}
# The config a dataset trains with when no --config is given (besides those named after it).
_DATASET_CONFIGS = {"clipart": "clipart_64"}

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


def get_prior_config(name: str | None = None, prior: str | None = None) -> PriorConfig:
    """A fresh prior config `name` (one of `PRIOR_CONFIG_NAMES`). `prior` (a `PRIOR_NETWORKS`
    name) replaces its network; without a name it picks the config named after that network
    when there is one ("transformer", "maskgit"), else "default"."""
    if prior is not None:
        checks.one_of("prior", prior, PRIOR_NETWORKS)
    if name is None:
        name = prior if prior in _PRIOR_CONFIGS else "default"
    fields = dict(_lookup(_PRIOR_CONFIGS, name, "prior config"))
    if prior is not None:
        fields["prior"] = prior
    return PriorConfig(**fields).validate()


def get_recipe(
    name: str, dataset: str | None = None, config: str | None = None, model: str | None = None, prior: str | None = None
) -> Recipe:
    """A pipeline recipe (one of `RECIPE_NAMES`) for `dataset` (default: the recipe's, else
    fashion_mnist) with the config `config`: by default the dataset's own when there is one
    (`cifar10`, `clipart_64` for clipart), else the
    Fashion-MNIST one; with `model="vqvae2"`, `DEFAULT_CONFIGS["vqvae2"]`. A VQ-VAE-2's prior
    sizes each level's stack to its grid. `prior` (a `PRIOR_NETWORKS` name) trains that network
    (its own prior config, for the recipe's steps) instead of the recipe's PixelCNN."""
    recipe = _lookup(_RECIPES, name, "pipeline recipe")
    dataset = dataset or recipe.get("dataset", "fashion_mnist")
    if config is None and model in (None, "vqvae"):
        config = dataset if dataset in _CONFIGS else _DATASET_CONFIGS.get(dataset, "fashion_mnist")
    vqvae = get_config(config, model)
    vqvae = dataclasses.replace(vqvae, dataset=dataset, **recipe["vqvae"]).validate()
    prior_config = get_prior_config(recipe["prior"])
    if prior not in (None, prior_config.prior):
        prior_config = dataclasses.replace(get_prior_config(prior=prior), steps=prior_config.steps)
    autoencoder = vqvae.model_cls
    try:
        family = priors.for_autoencoder(autoencoder.prior_family, prior_config.prior)
    except ValueError as e:
        raise ValueError(
            f"A {prior_config.prior} prior (--prior={prior_config.prior} or --recipe={name}) with a {autoencoder.title}: {e}"
        ) from e
    prior = dataclasses.replace(prior_config, conditional=True)
    if not family.one_grid:  # (VQ-VAE-2: each level's stack sized to its grid)
        prior.num_layers = None
    return Recipe(vqvae=vqvae, prior=prior)
