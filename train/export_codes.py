r"""Encodes the train and test splits with the trained VQ-VAE into WORKDIR/codes.

python -m train.export_codes --workdir=/tmp/run
"""

from absl import app, flags, logging

from train import common
from vqvae_tf import stages

flags.DEFINE_string("workdir", None, "Workdir of a trained VQ-VAE (WORKDIR/vqvae).", required=True)
flags.DEFINE_string("data_dir", None, "Data directory (default: as for training).")
flags.DEFINE_integer("batch_size", 500, "Images per encode batch.")
flags.DEFINE_bool("overwrite", False, "Re-export even if the codes come from the latest checkpoint.")
common.positive("batch_size")
FLAGS = flags.FLAGS


def main(argv):
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    stages.export_codes_stage(FLAGS.workdir, FLAGS.data_dir, FLAGS.batch_size, FLAGS.overwrite)


if __name__ == "__main__":
    app.run(main)
