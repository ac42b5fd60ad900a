"""SavedModels of a workdir's trained models or of a preset (the library behind
`python -m export.export_savedmodel`)."""

from __future__ import annotations

import os

from vqvae_tf.serving import savedmodel
from vqvae_tf.training import models_lib
from vqvae_tf.training.stage import Stage, StageContext
from vqvae_tf.training.workdir import read_json
from vqvae_tf.utils import files, progress


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


def _stage_done(ctx: StageContext) -> str | None:
    done = read_json(ctx.workdir.savedmodel_marker) or {}
    if done.get("sources") != ctx.sources():
        return None
    ctx.results["paths"] = {name: os.path.join(ctx.workdir.root, path) for name, path in done["paths"].items()}
    return "SavedModels of these checkpoints exist already"


def _run_stage(ctx: StageContext) -> None:
    w = ctx.workdir
    ctx.results["paths"] = export_savedmodel_stage(w.root, w.export)
    paths = {name: os.path.relpath(path, w.root) for name, path in ctx.results["paths"].items()}
    files.atomic_write_json(w.savedmodel_marker, {"sources": ctx.sources(), "paths": paths})


STAGE = Stage("export SavedModels", _run_stage, _stage_done)
