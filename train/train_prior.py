r"""Trains the gated PixelCNN prior on the codes in WORKDIR/codes.

    python -m train.train_prior --workdir=/tmp/run --conditional

Re-running the same command resumes from the latest checkpoint up to --steps in total.
"""

from absl import app, flags, logging

from train import common
from vqvae_tf import prior_training

_D = prior_training.PriorConfig()
flags.DEFINE_string("workdir", None, "Workdir holding codes/ (from train.export_codes).", required=True)
flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker"], "tf.distribute strategy.")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_integer("steps", _D.steps, "Total training steps.")
flags.DEFINE_integer("batch_size", _D.batch_size, "Global batch size.")
flags.DEFINE_float("learning_rate", _D.learning_rate, "Adam learning rate.")
flags.DEFINE_enum("lr_schedule", _D.lr_schedule, ["constant", "cosine"], "Learning-rate schedule.")
flags.DEFINE_integer("num_filters", _D.num_filters, "Channels of the gated stacks (width).")
flags.DEFINE_integer("num_layers", _D.num_layers, "Gated blocks (depth).")
flags.DEFINE_integer("kernel_size", _D.kernel_size, "Odd kernel size.")
flags.DEFINE_float("dropout", _D.dropout, "Dropout rate in the gated blocks.")
flags.DEFINE_bool("conditional", _D.conditional, "Condition the prior on class labels.")
flags.DEFINE_integer("log_every", 200, "Steps between progress lines.")
flags.DEFINE_integer("checkpoint_every", 1000, "Steps between checkpoints.")
for _name in ("steps", "batch_size", "learning_rate", "num_filters", "num_layers", "log_every", "checkpoint_every"):
    common.positive(_name)
flags.register_validator("dropout", lambda v: 0.0 <= v < 1.0, message="--dropout must be in [0, 1).")
flags.register_validator("kernel_size", lambda v: v >= 3 and v % 2 == 1, message="--kernel_size must be odd and >= 3.")
FLAGS = flags.FLAGS


def main(argv):
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config = prior_training.PriorConfig(
        num_filters=FLAGS.num_filters,
        num_layers=FLAGS.num_layers,
        kernel_size=FLAGS.kernel_size,
        dropout=FLAGS.dropout,
        conditional=FLAGS.conditional,
        steps=FLAGS.steps,
        batch_size=FLAGS.batch_size,
        learning_rate=FLAGS.learning_rate,
        lr_schedule=FLAGS.lr_schedule,
    )
    prior_training.train_prior(
        config,
        prior_training.PriorRunOptions(
            workdir=FLAGS.workdir,
            strategy=FLAGS.strategy,
            seed=FLAGS.seed,
            log_every=FLAGS.log_every,
            checkpoint_every=FLAGS.checkpoint_every,
            flags_text=FLAGS.flags_into_string(),
        ),
    )


if __name__ == "__main__":
    app.run(main)
