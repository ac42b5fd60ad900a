"""The main job (the library behind `python -m train.pipeline`): VQ-VAE -> codes -> prior ->
SavedModels -> TFLite -> REPORT.md, each stage from its own library.

The stages are `stages.PIPELINE_STAGES`; each skips work already done (its `done` test), so
re-running after an interruption continues where it stopped (training stages resume from their
checkpoints). This module prepares a run (data, image shape, the prior's reach) and runs them.
"""

from __future__ import annotations

import dataclasses
import time

from vqvae_tf.configs import Recipe
from vqvae_tf.pipeline.stages import PIPELINE_STAGES, StageContext, run_stages
from vqvae_tf.serving import tflite
from vqvae_tf.training import train_prior_lib, train_vqvae_lib
from vqvae_tf.training.options import RunOptions
from vqvae_tf.training.workdir import Workdir
from vqvae_tf.utils import files, progress


def run_pipeline(
    recipe: Recipe,
    options: RunOptions,
    command: str | None = None,
    stages=PIPELINE_STAGES,
    quantizations=None,
    fit_batch: bool = False,
) -> dict:
    """Runs `stages` (the pipeline's by default) for `recipe` in `options.workdir`; `command` (the
    command line that started it) is recorded in the presets' metadata; `quantizations`: the
    TFLite files to write (default all of `tflite.QUANTIZATIONS`); `fit_batch`: lower the VQ-VAE's
    batch to a training split smaller than it (saying so; the script does unless --batch_size is
    given). Returns {"report": path, "paths": {...}}."""
    options.validate()
    source = options.data_source(recipe.vqvae.dataset)
    recipe.vqvae.dataset = source.name
    info = source.info()
    train_vqvae_lib.fit_to_data(recipe.vqvae, info.image_shape, source)
    train_vqvae_lib.check_splits(recipe.vqvae, info, source, fit_batch)
    recipe.prior.validate()
    # A recipe's prior stack too shallow for a code grid is sized from it now, before anything trains.
    train_prior_lib.fit_to_grids(recipe.prior, recipe.vqvae.prior_grids(), recipe.vqvae.model_cls.prior_family)
    w = Workdir(options.workdir)
    files.ensure_writable_dir(w.root)
    if options.flags_text is not None:
        files.atomic_write_text(w.pipeline_flags, options.flags_text)
    # The stages report at the recipe's cadence; their flags files are the pipeline's.
    stage_options = dataclasses.replace(
        options, log_every=recipe.log_every, checkpoint_every=recipe.checkpoint_every, flags_text=None
    )
    ctx = StageContext(
        recipe,
        stage_options,
        w,
        command,
        pipeline_flags=options.flags_text,
        quantizations=tuple(quantizations or tflite.QUANTIZATIONS),
    )
    ctx = run_stages(stages, ctx)
    elapsed = progress.format_duration(time.time() - ctx.start)
    progress.log(f"Done in {elapsed}. Report: {ctx.results.get('report')}")
    return {"report": ctx.results.get("report"), "paths": ctx.results.get("paths", {})}
