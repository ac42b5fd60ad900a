"""Flags shared by the stage scripts (one `define_*` function each, as in tensorflow-models)."""

from absl import flags

from vqvae_tf import training


def define_common_flags():
    """--workdir, --data_dir, --strategy, --mixed_precision, --seed."""
    flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs, metrics and pictures.", required=True)
    flags.DEFINE_string(
        "data_dir",
        None,
        "Directory with IDX files or a TFDS data_dir (default: $VQVAE_DATA_DIR, "
        "then /usr/share/datasets/fashion-mnist, then TFDS's default).",
    )
    flags.DEFINE_enum("strategy", "default", list(training.STRATEGIES), "tf.distribute strategy.")
    flags.DEFINE_enum("mixed_precision", "none", list(training.MIXED_PRECISION), "Keras dtype policy.")
    flags.DEFINE_integer("seed", 0, "Random seed.")


def positive(name):
    flags.register_validator(name, lambda v: v is None or v > 0, message=f"--{name} must be > 0.")
