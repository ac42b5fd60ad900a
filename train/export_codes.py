r"""Encodes the train and test splits with the trained VQ-VAE into WORKDIR/codes (library:
vqvae_tf.training.export_codes_lib).

    python -m train.export_codes --workdir=/tmp/run
"""

from absl import flags

from vqvae_tf import cli
from vqvae_tf.training import export_codes_lib

_WORKDIR = cli.define_workdir("Workdir of a trained VQ-VAE (WORKDIR/vqvae).")
_DATA_DIR = cli.define_data_dir()
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 500, "Images per encode batch.", lower_bound=1)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Re-export even if the codes come from the latest checkpoint.")


def main():
    export_codes_lib.export_codes_stage(_WORKDIR.value, _DATA_DIR.value, _BATCH_SIZE.value, _OVERWRITE.value)


if __name__ == "__main__":
    cli.run(main)
