r"""The whole pipeline on one dataset: train the VQ-VAE, export codes, train the prior, export
SavedModels and TFLite files, and write WORKDIR/REPORT.md (library: vqvae_tf.pipeline.pipeline_lib).

    python -m train.pipeline --workdir=runs/demo               # default (about 17 min on 2 CPU cores)
    python -m train.pipeline --workdir=runs/quick --preset=quick  # a first look (under 5 min)

Every stage skips what is already done; re-running after an interruption continues.
"""

from absl import flags

from vqvae_tf import cli, configs
from vqvae_tf.pipeline import pipeline_lib

_RUN = cli.define_run_flags()
_PRESET = flags.DEFINE_enum(
    "preset", "default", list(configs.RECIPE_NAMES), "default: the quality run; quick: a first look."
)
_DATASET = flags.DEFINE_string("dataset", None, "Dataset (default: fashion_mnist).")
_VQVAE_STEPS = flags.DEFINE_integer("vqvae_steps", None, "Override the VQ-VAE training steps.", lower_bound=1)
_PRIOR_STEPS = flags.DEFINE_integer("prior_steps", None, "Override the prior training steps.", lower_bound=1)


def main():
    recipe = configs.get_recipe(_PRESET.value, _DATASET.value)
    recipe.vqvae.steps = _VQVAE_STEPS.value or recipe.vqvae.steps
    recipe.prior.steps = _PRIOR_STEPS.value or recipe.prior.steps
    pipeline_lib.run_pipeline(recipe, _RUN.options())


if __name__ == "__main__":
    cli.run(main)
