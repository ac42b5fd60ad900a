r"""Trains a VQ-VAE (library: vqvae_tf.training.train_vqvae_lib).

    python -m train.train_vqvae --workdir=/tmp/run --config=fashion_mnist
    python -m train.train_vqvae --workdir=/tmp/mine --config=vqvae_64 --dataset=image_folder \
        --data_dir=photos/ --image_size=64 --channels=3

Re-running the same command resumes from the latest checkpoint up to --steps in total.
"""

from absl import flags

from vqvae_tf import cli, configs
from vqvae_tf.models.vqvae import LIKELIHOODS, QUANTIZERS
from vqvae_tf.training import train_vqvae_lib

_RUN = cli.define_run_flags(
    dataset_help="Dataset: fashion_mnist, mnist, image_folder or a TFDS name (default: the config's).",
    cadence=cli.define_cadence_flags(log_every=100, checkpoint_every=500),
)
_CONFIG = flags.DEFINE_enum(
    "config", "fashion_mnist", list(configs.CONFIG_NAMES), "VQ-VAE config: network and optimisation."
)
_OVERRIDES = dict(
    cli.define_optimization_flags(),
    quantizer=flags.DEFINE_enum(
        "quantizer", None, list(QUANTIZERS), "vq: gradient codebook; ema: EMA codebook (default: the config's)."
    ),
    likelihood=flags.DEFINE_enum("likelihood", None, list(LIKELIHOODS), "Reconstruction loss (default: the config's)."),
    jit_compile=flags.DEFINE_bool("jit_compile", None, "XLA-compile the train step (default: the config's)."),
)


def main():
    config = cli.override(configs.get_config(_CONFIG.value), _OVERRIDES)
    train_vqvae_lib.train_and_evaluate(config, _RUN.options())


if __name__ == "__main__":
    cli.run(main)
