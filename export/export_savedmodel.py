r"""Exports SavedModels for TF Serving (library: vqvae_tf.serving.export_savedmodel_lib).

    python -m export.export_savedmodel --workdir=/tmp/run --export_dir=/tmp/serving [--version=N]
    python -m export.export_savedmodel --preset=fashion_mnist --export_dir=/tmp/serving
    python -m export.export_savedmodel --workdir=/tmp/run --export_dir=/tmp/serving --xla_sampler  # + sample_xla

Writes E/vqvae/N/ (and E/prior/N/ when a prior is trained), E/models.config and
E/batching_parameters.txt. Without --version the next free number is used; an existing version is
only replaced with --overwrite.
"""

from absl import flags

from vqvae_tf import cli
from vqvae_tf.serving import export_savedmodel_lib

_WORKDIR, _PRESET = cli.define_model_source("Workdir with a trained VQ-VAE (and optionally a prior).")
_EXPORT_DIR = flags.DEFINE_string("export_dir", None, "Base directory TF Serving watches.", required=True)
_VERSION = flags.DEFINE_integer("version", None, "Version number (default: next free).", lower_bound=1)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing version.")
_XLA_SAMPLER = flags.DEFINE_bool(
    "xla_sampler",
    False,
    "Add the prior's sample_xla signature: serving_default compiled by XLA, the same codes for the same "
    "inputs, several times faster on CPU. TF Serving runs it on CPU when started with "
    "--xla_cpu_compilation_enabled, not on GPU; serving_default stays the portable default.",
)


def main():
    export_savedmodel_lib.export_savedmodel_stage(
        _WORKDIR.value,
        _EXPORT_DIR.value,
        _VERSION.value,
        _OVERWRITE.value,
        preset=_PRESET.value,
        xla_sampler=_XLA_SAMPLER.value,
    )


def run():
    """The installed command (pyproject's [project.scripts])."""
    cli.run(main)


if __name__ == "__main__":
    run()
