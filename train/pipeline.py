r"""The whole pipeline on one dataset: train the VQ-VAE, export codes, train the prior, export
SavedModels and TFLite files, and write WORKDIR/REPORT.md.

    python -m train.pipeline --workdir=runs/demo               # default (about 17 min on 2 CPU cores)
    python -m train.pipeline --workdir=runs/quick --preset=quick  # a first look (under 5 min)

Every stage skips what is already done; re-running after an interruption continues.
"""

from absl import app, flags, logging

from train import common
from vqvae_tf import pipeline

common.define_common_flags()
flags.DEFINE_enum("preset", "default", list(pipeline.PRESETS), "default: the quality run; quick: a first look.")
flags.DEFINE_string("dataset", None, "Dataset (default: fashion_mnist).")
flags.DEFINE_integer("vqvae_steps", None, "Override the VQ-VAE training steps of the preset.")
flags.DEFINE_integer("prior_steps", None, "Override the prior training steps of the preset.")
common.positive("vqvae_steps")
common.positive("prior_steps")
FLAGS = flags.FLAGS


def main(argv):
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    pipeline.run_pipeline(
        pipeline.PipelineOptions(
            workdir=FLAGS.workdir,
            preset=FLAGS.preset,
            dataset=FLAGS.dataset,
            data_dir=FLAGS.data_dir,
            strategy=FLAGS.strategy,
            mixed_precision=FLAGS.mixed_precision,
            seed=FLAGS.seed,
            vqvae_steps=FLAGS.vqvae_steps,
            prior_steps=FLAGS.prior_steps,
            flags_text=FLAGS.flags_into_string(),
        )
    )


if __name__ == "__main__":
    app.run(main)
