r"""Trains a VQ-VAE.

    python -m train.train_vqvae --workdir=/tmp/run --config=fashion_mnist

Re-running the same command resumes from the latest checkpoint up to --steps in total.
"""

from absl import app, flags, logging

from train import common
from vqvae_tf import configs, training

common.define_common_flags()
flags.DEFINE_enum("config", "fashion_mnist", list(configs.PRESET_NAMES), "Config preset.")
flags.DEFINE_string("dataset", None, "Dataset name (default: the preset's).")
flags.DEFINE_integer("steps", None, "Total training steps (default: the preset's).")
flags.DEFINE_integer("batch_size", None, "Global batch size (default: the preset's).")
flags.DEFINE_float("learning_rate", None, "Adam learning rate (default: the preset's).")
flags.DEFINE_enum("quantizer", None, ["vq", "ema"], "vq: gradient codebook; ema: EMA codebook (default: the preset's).")
flags.DEFINE_enum("likelihood", None, ["mse", "logistic"], "Reconstruction loss (default: the preset's).")
flags.DEFINE_enum("lr_schedule", None, ["constant", "cosine"], "Learning-rate schedule (default: the preset's).")
flags.DEFINE_bool("jit_compile", None, "XLA-compile the train step (default: the preset's).")
flags.DEFINE_integer("log_every", 100, "Steps between progress lines / TensorBoard scalars.")
flags.DEFINE_integer("checkpoint_every", 500, "Steps between checkpoints.")
for _name in ("steps", "batch_size", "learning_rate", "log_every", "checkpoint_every"):
    common.positive(_name)
FLAGS = flags.FLAGS


def config_from_flags():
    config = configs.get_config(FLAGS.config)
    for name in (
        "dataset",
        "steps",
        "batch_size",
        "learning_rate",
        "quantizer",
        "likelihood",
        "lr_schedule",
        "jit_compile",
    ):
        value = getattr(FLAGS, name)
        if value is not None:
            setattr(config, name, value)
    return config.validate()


def main(argv):
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    training.train_and_evaluate(
        config_from_flags(),
        training.RunOptions(
            workdir=FLAGS.workdir,
            data_dir=FLAGS.data_dir,
            strategy=FLAGS.strategy,
            mixed_precision=FLAGS.mixed_precision,
            seed=FLAGS.seed,
            log_every=FLAGS.log_every,
            checkpoint_every=FLAGS.checkpoint_every,
            flags_text=FLAGS.flags_into_string(),
        ),
    )


if __name__ == "__main__":
    app.run(main)
