r"""Trains a VQ-VAE (library: vqvae_tf.training.train_vqvae_lib).

    python -m train.train_vqvae --workdir=/tmp/run --config=fashion_mnist
    python -m train.train_vqvae --workdir=/tmp/mine --config=vqvae_64 --dataset=image_folder \
        --data_dir=photos/ --image_size=64 --channels=3

    python -m train.train_vqvae --workdir=/tmp/fsq --quantizer=fsq --fsq_levels=8,6,5
    python -m train.train_vqvae --workdir=/tmp/rvq --quantizer=rvq --num_quantizers=4 --gradient=rotation
    python -m train.train_vqvae --workdir=/tmp/vq2 --config=vqvae2_64 --dataset=image_folder --data_dir=photos/
    python -m train.train_vqvae --workdir=/tmp/gan --config=vqgan_64 --dataset=image_folder --data_dir=photos/
    python -m train.train_vqvae --workdir=/tmp/lp --config=vqvae_64 --dataset=image_folder --data_dir=photos/ \
        --reconstruction_loss=l1 --perceptual_weight=1 --adversarial_weight=0.8 --disc_start=2000

    python -m train.train_vqvae --workdir=/tmp/ft --init_from=fashion_mnist --reinit_codebook \
        --dataset=image_folder --data_dir=photos/ --image_size=28 --channels=1 --steps=1000
    python -m train.train_vqvae --workdir=/tmp/dec --init_from=my_tokenizer --trainable=decoder \
        --dataset=image_folder --data_dir=photos/ --image_size=256 --steps=2000

Re-running the same command resumes from the latest checkpoint up to --steps in total.
"""

from absl import flags

from vqvae_tf import cli, configs
from vqvae_tf.models.autoencoders.vqvae import LIKELIHOODS
from vqvae_tf.training import train_vqvae_lib

_RUN = cli.define_run_flags(
    dataset_help="Dataset: fashion_mnist, mnist, image_folder or a TFDS name (default: the config's).",
    cadence=cli.define_cadence_flags(log_every=100, checkpoint_every=500),
)
_CONFIG = cli.define_config_flag(
    "Config: network and optimisation (default: fashion_mnist; vqvae2_64 with --model=vqvae2)."
)
_MODEL = cli.define_model_flag()
_OVERRIDES = dict(
    cli.define_optimization_flags(),
    **cli.define_quantizer_flags(),
    **cli.define_loss_flags(),
    likelihood=flags.DEFINE_enum("likelihood", None, list(LIKELIHOODS), "Reconstruction loss (default: the config's)."),
    jit_compile=cli.define_jit_compile_flag(),
    trainable=flags.DEFINE_enum(
        "trainable",
        None,
        list(configs.TRAINABLE),
        "With --init_from: all (default), or decoder: the encoder and codebook stay frozen, so the "
        "codes (and priors trained on them) stay valid.",
    ),
)


_INIT_FROM = cli.define_init_from_flag(
    "Fine-tune from a pretrained preset (a name or a preset directory): its network and weights."
)
_REINIT_CODEBOOK = flags.DEFINE_bool(
    "reinit_codebook", False, "With --init_from: re-initialise the codebook by k-means on the first batch."
)
flags.register_multi_flags_validator(
    ["init_from", "reinit_codebook"],
    lambda v: v["init_from"] or not v["reinit_codebook"],
    message="--reinit_codebook needs --init_from.",
)
flags.register_multi_flags_validator(
    ["init_from", "reinit_codebook", "trainable"],
    lambda v: v["trainable"] != "decoder" or (v["init_from"] and not v["reinit_codebook"]),
    message="--trainable=decoder fine-tunes a preset's decoder: it needs --init_from and keeps the codebook "
    "(no --reinit_codebook).",
)


def main():
    config = cli.override(configs.get_config(_CONFIG.value, _MODEL.value), _OVERRIDES)
    train_vqvae_lib.train_and_evaluate(
        config,
        _RUN.options(),
        _INIT_FROM.value,
        _REINIT_CODEBOOK.value,
        fit_batch=_OVERRIDES["batch_size"].value is None,
    )


def run():
    """The installed command (pyproject's [project.scripts])."""
    cli.run(main)


if __name__ == "__main__":
    run()
