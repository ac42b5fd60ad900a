"""SavedModels of a workdir's trained models or of a preset (the library behind
`python -m export.export_savedmodel`)."""

from __future__ import annotations

from vqvae_tf.serving import savedmodel
from vqvae_tf.training import models_lib
from vqvae_tf.utils import progress


def export_savedmodel_stage(
    workdir: str | None,
    export_dir: str,
    version: int | None = None,
    overwrite: bool = False,
    preset: str | None = None,
    xla_sampler: bool = False,
) -> dict:
    """SavedModels of the VQ-VAE (and of prior + decoder when there is a prior) of `workdir` or
    of `preset` under ``export_dir``, plus models.config and batching_parameters.txt.
    `xla_sampler`: the prior's SavedModel also gets `sample_xla` (`savedmodel.prior_endpoints`).
    Returns {name: path}."""
    model = models_lib.load_vqvae(workdir, preset)
    paths = {"vqvae": savedmodel.export_vqvae(model, export_dir, version, overwrite)}
    progress.log(f"Exported {paths['vqvae']}")
    if models_lib.has_prior(workdir, preset):
        prior = models_lib.load_prior(workdir, preset)
        paths["prior"] = savedmodel.export_prior(prior, model, export_dir, version, overwrite, xla_sampler)
        progress.log(f"Exported {paths['prior']}")
    savedmodel.write_server_files(export_dir)
    return paths
