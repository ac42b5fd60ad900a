"""A pipeline stage: a name, a skip-if-done test and the work, declared beside its library.

A stage is a `Stage(name, run, done)` of a `StageContext`, declared as `STAGE` at the bottom of
the library that does its work (`train_vqvae_lib.STAGE`, `export_codes_lib.STAGE`, ...); the
pipeline's order is one tuple, `vqvae_tf.pipeline.stages.PIPELINE_STAGES`. Add a stage: its
library (its `run`, its `done`, one `STAGE = Stage(...)`) and one entry in that tuple; a stage
that keeps files of its own takes a directory from `Workdir.stage_dir(name)` (nothing to add to
the workdir's layout). `run_stages` runs a list in order, printing banners and skipping what is
done.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable

import tensorflow as tf

from vqvae_tf.configs import Recipe
from vqvae_tf.training.options import RunOptions
from vqvae_tf.training.workdir import Workdir
from vqvae_tf.utils import progress


@dataclasses.dataclass
class StageContext:
    """What every stage receives."""

    recipe: Recipe
    options: RunOptions  # the stages' options (the recipe's cadence, no flags file of their own)
    workdir: Workdir
    command: str | None = None  # the command line that started the run (presets' provenance)
    pipeline_flags: str | None = None  # W/pipeline_flags.txt's text (the stages' flags.txt derive from it)
    quantizations: tuple | None = None  # the TFLite files to write (None: every one)
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
    name: str  # its banner
    run: Callable[[StageContext], None]
    done: Callable[[StageContext], str | None] = lambda ctx: None  # why its work can be skipped, or None


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


def trained(stage_dir, steps: int) -> str | None:
    """A trained stage's `done`: its metrics.json says it finished at `steps`."""
    return f"Done already ({stage_dir.metrics})" if stage_dir.trained_to(steps) else None


# The flags every stage script shares with train.pipeline (workdir, data, distribution, seed).
SHARED_FLAGS = ("workdir", "strategy", "mixed_precision", "seed", "dataset", "data_dir", "image_size", "channels")
SHARED_FLAGS += ("test_fraction", "skip_corrupt_images")


def flag_name(line: str) -> str:
    """The flag a flags-file line sets: "--name=value", "--name" or "--noname" -> "name" / "noname"."""
    return line.lstrip("-").split("=")[0]


def stage_flags(ctx: StageContext, recipe_config, fields, shared=SHARED_FLAGS, **extra) -> str | None:
    """A stage's flags.txt in a pipeline run: the pipeline's own flags that the stage's script also
    takes (`shared`), then the `fields` of `recipe_config` (None: left out) and `extra`
    flags, so that ``python -m train.<stage> --flagfile=W/<stage>/flags.txt`` repeats the stage.
    None when the pipeline has no flags text (a library call)."""
    if ctx.pipeline_flags is None:
        return None
    lines = [x for x in ctx.pipeline_flags.splitlines() if flag_name(x).removeprefix("no") in shared]
    values = {name: getattr(recipe_config, name) for name in fields} | extra
    values |= {"log_every": ctx.options.log_every, "checkpoint_every": ctx.options.checkpoint_every}
    for name, value in values.items():
        if isinstance(value, bool):
            lines.append(f"--{'' if value else 'no'}{name}")
        elif value is not None:
            lines.append(f"--{name}={','.join(map(str, value)) if isinstance(value, (list, tuple)) else value}")
    return "\n".join(lines) + "\n"
