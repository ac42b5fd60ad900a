"""SavedModels of a workdir's trained models (the library behind `python -m export.export_savedmodel`)."""

from __future__ import annotations

from vqvae_tf.serving import savedmodel
from vqvae_tf.training import train_prior_lib, train_vqvae_lib
from vqvae_tf.training.workdir import Workdir
from vqvae_tf.utils import progress


def export_savedmodel_stage(workdir: str, export_dir: str, version: int | None = None, overwrite: bool = False) -> dict:
    """SavedModels of the VQ-VAE (and of prior + decoder when a prior is trained) under
    ``export_dir``, plus models.config and batching_parameters.txt. Returns {name: path}."""
    model = train_vqvae_lib.load_trained_model(workdir)
    paths = {"vqvae": savedmodel.export_vqvae(model, export_dir, version, overwrite)}
    progress.log(f"Exported {paths['vqvae']}")
    if Workdir(workdir).prior.exists():
        prior = train_prior_lib.load_trained_prior(workdir)
        paths["prior"] = savedmodel.export_prior(prior, model, export_dir, version, overwrite)
        progress.log(f"Exported {paths['prior']}")
    savedmodel.write_server_files(export_dir)
    return paths
