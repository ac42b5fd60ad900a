r"""Exports SavedModels for TF Serving.

    python -m export.export_savedmodel --workdir=/tmp/run --export_dir=/tmp/serving [--version=N]

Writes E/vqvae/N/ (and E/prior/N/ when a prior is trained), E/models.config and
E/batching_parameters.txt. Without --version the next free number is used; an existing version is
only replaced with --overwrite.
"""

from absl import app, flags, logging

from vqvae_tf import stages

flags.DEFINE_string("workdir", None, "Workdir with a trained VQ-VAE (and optionally a prior).", required=True)
flags.DEFINE_string("export_dir", None, "Base directory TF Serving watches.", required=True)
flags.DEFINE_integer("version", None, "Version number (default: next free).")
flags.DEFINE_bool("overwrite", False, "Replace an existing version.")
flags.register_validator("version", lambda v: v is None or v > 0, message="--version must be a positive integer.")
FLAGS = flags.FLAGS


def main(argv):
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    stages.export_savedmodel_stage(FLAGS.workdir, FLAGS.export_dir, FLAGS.version, FLAGS.overwrite)


if __name__ == "__main__":
    app.run(main)
