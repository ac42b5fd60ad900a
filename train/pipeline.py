r"""The whole pipeline on one dataset: train the VQ-VAE, export codes, train the prior, export
SavedModels and TFLite files, and write WORKDIR/REPORT.md (library: vqvae_tf.pipeline.pipeline_lib).

    python -m train.pipeline --workdir=runs/demo               # default (about 17 min on 2 CPU cores)
    python -m train.pipeline --workdir=runs/quick --recipe=quick  # a first look (under 5 min)
    python -m train.pipeline --workdir=runs/mine --dataset=image_folder --data_dir=photos/ \
        --image_size=64 --channels=3 --config=vqvae_64         # your own images
    python -m train.pipeline --workdir=runs/lp --config=vqgan_64 --dataset=image_folder --data_dir=photos/ \
        --batch_size=16 --perceptual_weight=1 --perceptual_start=2000  # the VQ-VAE's training flags
    python -m train.pipeline --workdir=runs/fsq --quantizer=fsq --fsq_levels=8,6,5  # another quantizer
    python -m train.pipeline --workdir=runs/vq2 --model=vqvae2 --image_size=56     # VQ-VAE-2 (7x7 + 14x14 codes)
    python -m train.pipeline --workdir=runs/mg --prior=maskgit     # MaskGIT prior (or transformer)
    python -m train.pipeline --workdir=runs/clipart --recipe=clipart  # colour: 64x64 clip art (make data-clipart)

Every stage skips what is already done; re-running after an interruption continues.
"""

import shlex
import sys

from absl import flags

from vqvae_tf import cli, configs
from vqvae_tf.pipeline import pipeline_lib

_RUN = cli.define_run_flags(dataset_help="Dataset: fashion_mnist (default), mnist, image_folder or a TFDS name.")
_RECIPE = flags.DEFINE_enum(
    "recipe",
    "default",
    list(configs.RECIPE_NAMES),
    "default: the quality run; quick: a first look; clipart: the colour zoo's 64x64 clip-art presets (--dataset=clipart).",
)
_CONFIG = cli.define_config_flag(
    "Config (default: the dataset's own if it has one, else fashion_mnist; vqvae2_64 with --model=vqvae2)."
)
_MODEL = cli.define_model_flag()
_QUANTIZER = cli.define_quantizer_flags()
_PRIOR = flags.DEFINE_enum(
    "prior",
    None,
    list(configs.PRIOR_NETWORKS),
    "The prior network: pixelcnn, transformer or maskgit (its own prior config, for the recipe's steps). "
    "Default: the recipe's (maskgit for clipart, else pixelcnn).",
)
_VQVAE_STEPS = flags.DEFINE_integer("vqvae_steps", None, "Override the VQ-VAE training steps.", lower_bound=1)
_PRIOR_STEPS = flags.DEFINE_integer("prior_steps", None, "Override the prior training steps.", lower_bound=1)
_QUANTIZATION = cli.define_quantization_flag()
# The VQ-VAE stage's training flags (train.train_vqvae's, but --steps: --vqvae_steps here).
_TRAINING = dict(
    cli.define_optimization_flags(steps=False, batch_help=" The VQ-VAE's; the prior keeps its config's."),
    **cli.define_loss_flags(),
)


def main():
    recipe = configs.get_recipe(_RECIPE.value, _RUN.data["name"].value, _CONFIG.value, _MODEL.value, prior=_PRIOR.value)
    cli.override(recipe.vqvae, {**_QUANTIZER, **_TRAINING})
    recipe.vqvae.steps = _VQVAE_STEPS.value or recipe.vqvae.steps
    recipe.prior.steps = _PRIOR_STEPS.value or recipe.prior.steps
    command = shlex.join(["python", "-m", "train.pipeline", *sys.argv[1:]])
    pipeline_lib.run_pipeline(
        recipe,
        _RUN.options(),
        command=command,
        quantizations=cli.quantizations(_QUANTIZATION),
        fit_batch=_TRAINING["batch_size"].value is None,
    )


def run():
    """The installed command (pyproject's [project.scripts])."""
    cli.run(main)


if __name__ == "__main__":
    run()
