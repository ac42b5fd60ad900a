r"""Encodes the train and test splits with the trained VQ-VAE into WORKDIR/codes (library:
vqvae_tf.training.export_codes_lib).

    python -m train.export_codes --workdir=/tmp/run

The data is the one the VQ-VAE was trained on (WORKDIR/vqvae/config.json); the data flags that
are set replace its fields (e.g. --data_dir after moving an image folder).
"""

from absl import flags

from vqvae_tf import cli
from vqvae_tf.training import export_codes_lib

_WORKDIR = cli.define_workdir("Workdir of a trained VQ-VAE (WORKDIR/vqvae).")
_DATA = cli.define_data_flags("Dataset (default: the one the VQ-VAE was trained on).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 500, "Images per encode batch.", lower_bound=1)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Re-export even if the codes come from the latest checkpoint.")


def main():
    values = cli.data_values(_DATA, only_present=True)
    export_codes_lib.export_codes_stage(
        _WORKDIR.value, batch_size=_BATCH_SIZE.value, overwrite=_OVERWRITE.value, **values
    )


def run():
    """The installed command (pyproject's [project.scripts])."""
    cli.run(main)


if __name__ == "__main__":
    run()
