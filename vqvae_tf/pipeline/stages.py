"""Stages: the pipeline as a list of `Stage` objects, each with one skip-if-done test.

A stage has a name (its banner), a `done(ctx)` test that says why its work can be skipped (or
None), and a `run(ctx)` that does the work; `run_stages` runs a list in order, printing banners
and skipping what is done. Every stage receives the same `StageContext`: the recipe, the run's
options and its `Workdir`, and what earlier stages produced (`results`).

Add a stage: a `done` and a `run` function of the context and one `Stage(...)` line in
`PIPELINE_STAGES` (or in a list of your own passed to `run_stages`).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable

import tensorflow as tf

from vqvae_tf.configs import PRIOR_CONFIG_NAMES, Recipe, get_prior_config
from vqvae_tf.data import codes
from vqvae_tf.layers.quantizers import option_fields
from vqvae_tf.losses.objective import ImageLossConfig
from vqvae_tf.models import priors
from vqvae_tf.pipeline.report import write_report
from vqvae_tf.serving import export_presets_lib, export_savedmodel_lib, export_tflite_lib, tflite
from vqvae_tf.training import export_codes_lib, train_prior_lib, train_vqvae_lib
from vqvae_tf.training.options import RunOptions
from vqvae_tf.training.workdir import Workdir, read_json
from vqvae_tf.utils import files, progress


@dataclasses.dataclass
class StageContext:
    """What every stage receives."""

    recipe: Recipe
    options: RunOptions  # the stages' options (the recipe's cadence, no flags file of their own)
    workdir: Workdir
    command: str | None = None  # the command line that started the run (presets' provenance)
    pipeline_flags: str | None = None  # W/pipeline_flags.txt's text (the stages' flags.txt derive from it)
    quantizations: tuple = tflite.QUANTIZATIONS  # the TFLite files to write
    results: dict = dataclasses.field(default_factory=dict)  # what earlier stages produced
    start: float = dataclasses.field(default_factory=time.time)

    def sources(self) -> dict:
        """The checkpoints the exports are made from: {"vqvae": path, "prior": path or None},
        relative to the workdir (the done-markers hold them: a copied or moved workdir is done)."""
        w = self.workdir
        latest = {
            name: tf.train.latest_checkpoint(stage.checkpoints)
            for name, stage in (("vqvae", w.vqvae), ("prior", w.prior))
        }
        return {name: path and os.path.relpath(path, w.root) for name, path in latest.items()}


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[StageContext], None]
    done: Callable[[StageContext], str | None] = lambda ctx: None


def run_stages(stages, ctx: StageContext) -> StageContext:
    """Runs `stages` in order: a banner each, then the work unless `done` says why to skip it."""
    for i, stage in enumerate(stages):
        elapsed = progress.format_duration(time.time() - ctx.start)
        progress.log(f"\n=== [{i + 1}/{len(stages)}] {stage.name}  (elapsed {elapsed}) ===")
        reason = stage.done(ctx)
        if reason:
            progress.log(f"{reason}; skipping.")
        else:
            stage.run(ctx)
    return ctx


def _trained(stage_dir, steps: int) -> str | None:
    return f"Done already ({stage_dir.metrics})" if stage_dir.trained_to(steps) else None


# The flags every stage script shares with train.pipeline (workdir, data, distribution, seed).
SHARED_FLAGS = ("workdir", "strategy", "mixed_precision", "seed", "dataset", "data_dir", "image_size", "channels")
SHARED_FLAGS += ("test_fraction", "skip_corrupt_images")


def _flag_name(line: str) -> str:
    """The flag a flags-file line sets: "--name=value", "--name" or "--noname" -> "name" / "noname"."""
    return line.lstrip("-").split("=")[0]


def stage_flags(ctx: StageContext, recipe_config, fields, shared=SHARED_FLAGS, **extra) -> str | None:
    """A stage's flags.txt in a pipeline run: the pipeline's own flags that the stage's script also
    takes (`shared`), then the `fields` of `recipe_config` (None: left out) and `extra`
    flags, so that ``python -m train.<stage> --flagfile=W/<stage>/flags.txt`` repeats the stage.
    None when the pipeline has no flags text (a library call)."""
    if ctx.pipeline_flags is None:
        return None
    lines = [x for x in ctx.pipeline_flags.splitlines() if _flag_name(x).removeprefix("no") in shared]
    values = {name: getattr(recipe_config, name) for name in fields} | extra
    values |= {"log_every": ctx.options.log_every, "checkpoint_every": ctx.options.checkpoint_every}
    for name, value in values.items():
        if isinstance(value, bool):
            lines.append(f"--{'' if value else 'no'}{name}")
        elif value is not None:
            lines.append(f"--{name}={','.join(map(str, value)) if isinstance(value, (list, tuple)) else value}")
    return "\n".join(lines) + "\n"


def vqvae_stage_flags(ctx: StageContext) -> str | None:
    """W/vqvae/flags.txt of a pipeline run (`stage_flags`): train.train_vqvae's flags."""
    vq = ctx.recipe.vqvae
    given = [_flag_name(x) for x in (ctx.pipeline_flags or "").splitlines()]
    # The quantizer options the pipeline was given (a bool one may be written --noNAME).
    quantizer = [name for name in (*option_fields(), "quantizer") if name in given or f"no{name}" in given]
    losses = [f.name for f in dataclasses.fields(ImageLossConfig) if f.name in given]  # (the loss flags given)
    fields = ("steps", "batch_size", "learning_rate", "lr_schedule", *quantizer, *losses)
    return stage_flags(ctx, vq, fields, config=vq.name, model=vq.model)


def _train_vqvae(ctx: StageContext) -> None:
    text = vqvae_stage_flags(ctx)
    train_vqvae_lib.train_and_evaluate(ctx.recipe.vqvae, dataclasses.replace(ctx.options, flags_text=text))


def _train_prior(ctx: StageContext) -> None:
    prior = ctx.recipe.prior
    # Class-conditional only where the dataset has labels.
    meta = codes.load_meta(ctx.workdir.codes)
    prior.conditional = prior.conditional and bool(meta["num_classes"])
    # The network fields the prior's family reads (VQ-VAE-2's: its bottom PixelCNN's too).
    network = ("prior", *priors.family_for(meta, prior.prior).network_fields, "conditional")
    # Every field is a flag; a stack sized from the grid (num_layers None, no flag for it) starts
    # from a prior config whose num_layers is None, a transformer's from its own.
    if prior.num_layers is None:
        base = next(n for n in PRIOR_CONFIG_NAMES if get_prior_config(n).num_layers is None)
    else:
        base = prior.prior if prior.prior in PRIOR_CONFIG_NAMES else "default"
    text = stage_flags(ctx, prior, ("steps", "batch_size", "learning_rate", "lr_schedule", *network), config=base)
    train_prior_lib.train_prior(prior, dataclasses.replace(ctx.options, flags_text=text))


def _savedmodels_done(ctx: StageContext) -> str | None:
    done = read_json(ctx.workdir.savedmodel_marker) or {}
    if done.get("sources") != ctx.sources():
        return None
    ctx.results["paths"] = {name: os.path.join(ctx.workdir.root, path) for name, path in done["paths"].items()}
    return "SavedModels of these checkpoints exist already"


def _export_savedmodels(ctx: StageContext) -> None:
    w = ctx.workdir
    ctx.results["paths"] = export_savedmodel_lib.export_savedmodel_stage(w.root, w.export)
    paths = {name: os.path.relpath(path, w.root) for name, path in ctx.results["paths"].items()}
    files.atomic_write_json(w.savedmodel_marker, {"sources": ctx.sources(), "paths": paths})


def _tflite_done(ctx: StageContext) -> str | None:
    w = ctx.workdir
    marker = read_json(w.tflite_marker) or {}
    made = list(marker.get("quantizations", tflite.QUANTIZATIONS))  # (a marker from before the flag: all)
    same = marker.get("vqvae") == ctx.sources()["vqvae"] and made == list(ctx.quantizations)
    return (
        "TFLite files of this checkpoint exist already"
        if same and os.path.exists(tflite.report_path(w.export))
        else None
    )


def _export_tflite(ctx: StageContext) -> None:
    w = ctx.workdir
    export_tflite_lib.export_tflite_stage(w.root, w.export, ctx.quantizations, ctx.options.data.data_dir)
    files.atomic_write_json(
        w.tflite_marker, {"vqvae": ctx.sources()["vqvae"], "quantizations": list(ctx.quantizations)}
    )


def _presets_and_report(ctx: StageContext) -> None:
    w = ctx.workdir
    preset_paths = export_presets_lib.export_presets_stage(w.root, command=ctx.command)
    ctx.results["report"] = write_report(w.root, ctx.results["paths"], time.time() - ctx.start, preset_paths)


PIPELINE_STAGES = (
    Stage(
        "train VQ-VAE",
        _train_vqvae,
        lambda ctx: _trained(ctx.workdir.vqvae, ctx.recipe.vqvae.steps),
    ),
    Stage(
        "export codes",
        lambda ctx: export_codes_lib.export_codes_stage(ctx.workdir.root, ctx.options.data.data_dir, overwrite=True),
        lambda ctx: export_codes_lib.codes_up_to_date(ctx.workdir.root, ctx.options.data.data_dir),
    ),
    Stage("train prior", _train_prior, lambda ctx: _trained(ctx.workdir.prior, ctx.recipe.prior.steps)),
    Stage("export SavedModels", _export_savedmodels, _savedmodels_done),
    Stage("convert to TFLite", _export_tflite, _tflite_done),
    Stage("write presets and report", _presets_and_report),
)
