r"""Trains a prior on the codes in WORKDIR/codes: a gated PixelCNN (default), a causal transformer or
MaskGIT (library: vqvae_tf.training.train_prior_lib).

    python -m train.train_prior --workdir=/tmp/run --conditional
    python -m train.train_prior --workdir=/tmp/run --conditional --prior=transformer   # config "transformer"
    python -m train.train_prior --workdir=/tmp/run --conditional --prior=maskgit --num_filters=256
    python -m train.train_prior --workdir=/tmp/vq2 --config=vqvae2 --conditional --attention_blocks=2   # VQ-VAE-2

Re-running the same command resumes from the latest checkpoint up to --steps in total.
"""

from absl import app, flags

from vqvae_tf import cli, configs
from vqvae_tf.models import priors
from vqvae_tf.training import train_prior_lib

_RUN = cli.define_run_flags(
    workdir_help="Workdir holding codes/ (from train.export_codes).",
    cadence=cli.define_cadence_flags(log_every=200, checkpoint_every=1000),
)
_CONFIG = flags.DEFINE_enum(
    "config",
    None,
    list(configs.PRIOR_CONFIG_NAMES),
    "Prior config preset (default: the one named after --prior if there is one, else default).",
)
_PRIOR = flags.DEFINE_enum(
    "prior",
    None,
    list(configs.PRIOR_NETWORKS),
    "The prior network: pixelcnn (gated PixelCNN), transformer (causal, KV-cached sampler) or maskgit "
    "(parallel decoding). Unset: the config's (pixelcnn).",
)
_OVERRIDES = dict(
    cli.define_optimization_flags(),
    num_filters=flags.DEFINE_integer(
        "num_filters", None, "Channels of the gated stacks (width); a transformer's width.", lower_bound=1
    ),
    num_layers=flags.DEFINE_integer(
        "num_layers",
        None,
        "Gated blocks (depth; unset: the config's, or as many as the codes' grid needs if that is more); "
        "a transformer's blocks.",
        lower_bound=1,
    ),
    kernel_size=flags.DEFINE_integer("kernel_size", None, "Odd kernel size (>= 3; PixelCNN only)."),
    dropout=flags.DEFINE_float("dropout", None, "Dropout rate in the blocks, in [0, 1)."),
    conditional=flags.DEFINE_bool("conditional", None, "Condition the prior on class labels."),
    attention_blocks=flags.DEFINE_integer(
        "attention_blocks", None, "Causal self-attention blocks (VQ-VAE-2's top prior; 0: none).", lower_bound=0
    ),
)
_INIT_FROM = cli.define_init_from_flag("Fine-tune from a pretrained preset's prior (a name or a preset directory).")


def main():
    config = cli.override(configs.get_prior_config(_CONFIG.value, _PRIOR.value), _OVERRIDES)
    if config.attention_blocks and "attention_blocks" not in priors.get(config.prior).network_fields:
        raise app.UsageError(f"--attention_blocks: PixelCNN's, not the {config.prior} prior's (all attention).")
    # The config's depth fits itself to the codes' grid; a --num_layers too small for it is refused.
    fit = not _OVERRIDES["num_layers"].present
    train_prior_lib.train_prior(config, _RUN.options(), _INIT_FROM.value, fit_to_codes=fit)


def run():
    """The installed command (pyproject's [project.scripts])."""
    cli.run(main)


if __name__ == "__main__":
    run()
