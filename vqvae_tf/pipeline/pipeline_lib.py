"""The main job (the library behind `python -m train.pipeline`): VQ-VAE -> codes -> prior ->
SavedModels -> TFLite -> REPORT.md, each stage from its own library.

Each stage skips work already done, so re-running after an interruption continues where it
stopped (training stages resume from their checkpoints).
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import sys
import time

import tensorflow as tf

from vqvae_tf.configs import Recipe
from vqvae_tf.data import codes
from vqvae_tf.models.pixelcnn import PixelCNN
from vqvae_tf.pipeline.report import write_report
from vqvae_tf.serving import export_presets_lib, export_savedmodel_lib, export_tflite_lib, tflite
from vqvae_tf.training import export_codes_lib, train_prior_lib, train_vqvae_lib
from vqvae_tf.training.options import RunOptions
from vqvae_tf.training.workdir import StageDir, Workdir, read_json
from vqvae_tf.utils import files, progress

STAGES = (
    "train VQ-VAE",
    "export codes",
    "train prior",
    "export SavedModels",
    "convert to TFLite",
    "write presets and report",
)
# The pipeline's own markers: which checkpoints the exports were made from.
SAVEDMODEL_MARKER = "savedmodel_export.json"  # in W/export
TFLITE_MARKER = "source.json"  # in W/export/tflite


def _from_pipeline_script() -> bool:
    return bool(sys.argv) and sys.argv[0].replace(os.sep, "/").endswith("train/pipeline.py")


def _latest(stage: StageDir) -> str | None:
    return tf.train.latest_checkpoint(stage.checkpoints)


def run_pipeline(recipe: Recipe, options: RunOptions) -> dict:
    """Runs every stage of `recipe` in `options.workdir`. Returns {"report": path, "paths": {...}}."""
    options.validate()
    source = options.data_source(recipe.vqvae.dataset)
    recipe.vqvae.dataset = source.name
    train_vqvae_lib.fit_to_data(recipe.vqvae, source.info().image_shape, source)
    recipe.prior.validate()
    grids = recipe.vqvae.prior_grids()
    if recipe.vqvae.model == "vqvae":
        grid = grids["codes"]
        layers = PixelCNN.layers_to_reach(grid, recipe.prior.kernel_size)
        too_short = recipe.prior.num_layers is not None and recipe.prior.num_layers < layers
        if grid != recipe.vqvae.latent_shape and too_short:
            # Residual VQ's codes lie side by side along the rows: a wider grid than the recipe's prior sees.
            recipe.prior.num_layers = None
            progress.log(
                f"The prior models a {grid[0]}x{grid[1]} code grid: its stack is sized to {layers} gated blocks."
            )
    # Refuse a prior that cannot see a whole code grid now, not after the VQ-VAE has trained.
    for grid in grids.values():
        PixelCNN.resolve_layers(grid, recipe.prior.num_layers, recipe.prior.kernel_size)
    w = Workdir(options.workdir)
    files.ensure_writable_dir(w.root)
    if options.flags_text is not None:
        files.atomic_write_text(w.pipeline_flags, options.flags_text)
    # The stages report at the recipe's cadence; their flags files are the pipeline's.
    stage_options = dataclasses.replace(
        options, log_every=recipe.log_every, checkpoint_every=recipe.checkpoint_every, flags_text=None
    )
    start = time.time()

    def banner(i):
        progress.log(
            f"\n=== [{i + 1}/{len(STAGES)}] {STAGES[i]}  (elapsed {progress.format_duration(time.time() - start)}) ==="
        )

    banner(0)
    if (w.vqvae.read_metrics() or {}).get("steps") == recipe.vqvae.steps:
        progress.log(f"Done already ({w.vqvae.metrics}); skipping.")
    else:
        train_vqvae_lib.train_and_evaluate(recipe.vqvae, stage_options)

    banner(1)
    export_codes_lib.export_codes_stage(w.root, options.data_dir)

    banner(2)
    # Class-conditional only where the dataset has labels.
    recipe.prior.conditional = recipe.prior.conditional and bool(codes.load_meta(w.codes)["num_classes"])
    if (w.prior.read_metrics() or {}).get("steps") == recipe.prior.steps:
        progress.log(f"Done already ({w.prior.metrics}); skipping.")
    else:
        train_prior_lib.train_prior(recipe.prior, stage_options)

    sources = {"vqvae": _latest(w.vqvae), "prior": _latest(w.prior)}
    banner(3)
    saved_marker = os.path.join(w.export, SAVEDMODEL_MARKER)
    done = read_json(saved_marker) or {}
    if done.get("sources") == sources:
        progress.log("SavedModels of these checkpoints exist already; skipping.")
        paths = done["paths"]
    else:
        paths = export_savedmodel_lib.export_savedmodel_stage(w.root, w.export)
        files.atomic_write_json(saved_marker, {"sources": sources, "paths": paths})

    banner(4)
    tflite_marker = os.path.join(w.export, tflite.SUBDIR, TFLITE_MARKER)
    if (
        os.path.exists(tflite.report_path(w.export))
        and (read_json(tflite_marker) or {}).get("vqvae") == sources["vqvae"]
    ):
        progress.log("TFLite files of this checkpoint exist already; skipping.")
    else:
        export_tflite_lib.export_tflite_stage(w.root, w.export, tflite.QUANTIZATIONS, options.data_dir)
        files.atomic_write_json(tflite_marker, {"vqvae": sources["vqvae"]})

    banner(5)
    command = shlex.join(["python", "-m", "train.pipeline", *sys.argv[1:]]) if _from_pipeline_script() else None
    preset_paths = export_presets_lib.export_presets_stage(w.root, command=command)
    report = write_report(w.root, paths, time.time() - start, preset_paths)
    progress.log(f"Done in {progress.format_duration(time.time() - start)}. Report: {report}")
    return {"report": report, "paths": paths}
