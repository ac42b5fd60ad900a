"""The one training loop every stage uses.

`stage_run(options, stage, record, architecture, batch_size)` sets up a stage: the tf.distribute
strategy, the chief (``strategy.extended.should_checkpoint``), the stage directory and its lock,
the refusal of a directory holding another architecture, and the run files (config.json,
flags.txt). The `StageRun` it yields builds the model under the strategy and resumes it from the
newest readable checkpoint (`build`), then trains it with progress lines, TensorBoard scalars and
periodic checkpoints (`train`). `load_trained` rebuilds a finished stage's model for later stages.

A new trained stage writes a `*_lib.py` that calls these; it needs no loop of its own.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import tempfile
import time

import keras
import tensorflow as tf

from vqvae_tf.training import checkpoints
from vqvae_tf.training.options import STRATEGIES, RunOptions
from vqvae_tf.training.workdir import StageDir
from vqvae_tf.utils import files, progress

# jit_compile="auto": JIT_PROBE_ROUNDS timings of JIT_PROBE_STEPS steps with and without XLA (all
# of them real training steps), for runs of at least JIT_PROBE_MIN_STEPS steps.
JIT_PROBE_STEPS = 10
JIT_PROBE_ROUNDS = 2
JIT_PROBE_MIN_STEPS = 200


def make_strategy(name) -> tf.distribute.Strategy:
    """`default`, `mirrored` (all local GPUs, else all logical CPUs) or `multi_worker` (TF_CONFIG).
    A `tf.distribute.Strategy` object is returned as it is."""
    if isinstance(name, tf.distribute.Strategy):
        return name
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise ValueError("--strategy=multi_worker needs the TF_CONFIG environment variable (see BUILD.md).")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"Unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}.")


def check_batch_size(batch_size: int, strategy: tf.distribute.Strategy) -> None:
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise ValueError(
            f"batch_size {batch_size} is not divisible by the {replicas} replicas of the "
            f"{type(strategy).__name__}; use a multiple of {replicas}."
        )


# Architecture fields added after format version 2, with the value a record without them had.
ADDED_FIELDS = {"prior": "pixelcnn", "trainable": "all"}


def check_saved_architecture(stage: StageDir, architecture: dict) -> None:
    """Raises WorkdirError if the stage's config.json holds other values of `architecture`'s fields."""
    saved = stage.read_config()
    if saved is None:
        return
    version, saved = files.format_version(saved), {**ADDED_FIELDS, **saved.get("config", {})}
    if version < 2:  # a field the record lacks came later than that run (e.g. fsq_levels): it had the default
        architecture = {k: v for k, v in architecture.items() if k in saved}
    missing = "(missing)"
    diffs = [
        f"{k}: saved {saved.get(k, missing)!r} vs now {v!r}"
        for k, v in architecture.items()
        if saved.get(k, missing) != v
    ]
    if diffs:
        hint = "Use another --workdir, or delete this one to start over."
        if os.path.basename(os.path.normpath(stage.path)) == "prior":  # a second prior on the same codes
            root = os.path.dirname(os.path.normpath(stage.path))
            hint = (
                f"To train another prior on the same codes, copy the autoencoder and its codes to a new workdir "
                f"(mkdir NEW && cp -r {os.path.join(root, 'vqvae')} {os.path.join(root, 'codes')} NEW/) and train "
                "there; or delete this prior to start over."
            )
        raise files.WorkdirError(f"{stage.path} holds a model trained with another config ({'; '.join(diffs)}). {hint}")


@contextlib.contextmanager
def stage_run(options: RunOptions, stage: StageDir, record: dict, architecture: dict, batch_size: int):
    """Yields the `StageRun` of `stage`. The chief works in the stage directory and holds its lock
    throughout; the other workers of a multi-worker job write their copies of the (collective)
    checkpoint saves to a scratch directory. `options` are validated by the caller. `record` is written to config.json (what
    `load_trained` rebuilds the model from), `options.flags_text` to flags.txt."""
    strategy = make_strategy(options.strategy)
    check_batch_size(batch_size, strategy)
    # The stage's dtype policy holds inside it only: the next stage of a pipeline (a prior, the
    # SavedModel and TFLite exports) starts from the policy it had before.
    previous_policy = keras.mixed_precision.global_policy()
    if options.mixed_precision == "auto":  # a stage without a probe of its own (the priors)
        progress.log("mixed_precision=auto: this stage trains in float32 (no probe of its step yet).")
        keras.mixed_precision.set_global_policy("float32")
    elif options.mixed_precision != "none":
        keras.mixed_precision.set_global_policy(options.mixed_precision)
    try:
        if not strategy.extended.should_checkpoint:
            yield StageRun(options, StageDir(tempfile.mkdtemp(prefix=f"{stage.name}-worker-")), strategy, chief=False)
            return
        files.ensure_writable_dir(stage.path)
        with files.WorkdirLock(stage.path):
            check_saved_architecture(stage, architecture)
            files.atomic_write_json(stage.config, {"format_version": files.FORMAT_VERSION, **record})
            if options.flags_text is not None:
                files.atomic_write_text(stage.flags, options.flags_text)
            yield StageRun(options, stage, strategy, chief=True)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


class StageRun:
    """One stage's training under its strategy; see `stage_run`."""

    def __init__(self, options: RunOptions, stage: StageDir, strategy: tf.distribute.Strategy, chief: bool):
        self.options = options
        self.stage = stage
        self.strategy = strategy
        self.chief = chief
        self.step = 0
        self.manager = None
        self.writer = tf.summary.create_file_writer(stage.tensorboard) if chief else tf.summary.create_noop_writer()

    def build(self, build_fn, total_steps: int):
        """`build_fn()` under the strategy (seeded with options.seed), resumed from the newest
        readable checkpoint; `self.step` is then the step it resumed at."""
        keras.utils.set_random_seed(self.options.seed)
        with self.strategy.scope():
            model = build_fn()
        ckpt, self.manager = checkpoints.make_manager(model, self.stage.checkpoints)
        restored = checkpoints.restore_newest(ckpt, self.manager)
        self.step = int(model.optimizer.iterations.numpy())
        if restored:
            progress.log(f"Resumed from step {self.step} ({restored}).")
        if self.step >= total_steps:
            progress.log(f"Already at step {self.step} >= --steps={total_steps}; nothing to train.")
        return model

    def _probe_jit_compile(self, steps_runner, iterator, steps_left, batch_size, step):
        """`jit_compile="auto"`: trains a few steps with and without XLA, alternating, and returns
        (whether XLA was faster, the step reached). Every probe step is a real training step. Runs
        that are too short, or have several replicas (XLA is used for one only), train without."""
        if self.strategy.num_replicas_in_sync > 1 or steps_left < JIT_PROBE_MIN_STEPS:
            progress.log(
                f"jit_compile=auto: no XLA probe for {steps_left} step(s) on "
                f"{self.strategy.num_replicas_in_sync} replica(s); training without XLA."
            )
            return False, step
        runners = {xla: steps_runner(xla) for xla in (False, True)}
        n = tf.constant(JIT_PROBE_STEPS)
        rates = {False: [], True: []}
        for run_steps in runners.values():  # compile both
            run_steps(iterator, tf.constant(1))
            step += 1
        for _ in range(JIT_PROBE_ROUNDS):
            for xla, run_steps in runners.items():
                t0 = time.time()
                run_steps(iterator, n)
                rates[xla].append(JIT_PROBE_STEPS * batch_size / (time.time() - t0))
                step += JIT_PROBE_STEPS
        best = {xla: max(r) for xla, r in rates.items()}
        xla = best[True] > best[False]
        progress.log(
            f"jit_compile=auto: {best[True]:.0f} ex/s with XLA, {best[False]:.0f} without "
            f"(best of {JIT_PROBE_ROUNDS} x {JIT_PROBE_STEPS} steps each) -> training {'with' if xla else 'without'} XLA."
        )
        return xla, step

    def _diverged(self, model, step: int):
        bad = [m.name for m in model.metrics if not math.isfinite(float(m.result()))]
        self.writer.flush()
        kept = self.manager.latest_checkpoint if self.manager is not None else None
        raise TrainingDiverged(
            f"training diverged at step {step}: {', '.join(bad) or 'a loss'} became NaN or infinite. Nothing of "
            f"it was saved; the last good checkpoint is {kept or 'none (no step was saved yet)'}. Lower "
            "--learning_rate (or the loss weights) and re-run to resume from it."
        )

    def train(
        self, model, dataset, total_steps, batch_size, jit_compile=False, format_logs=None, summaries=None
    ) -> float | None:
        """Runs `model.train_step` under the strategy from `self.step` to `total_steps`, with
        progress lines (losses, examples/s, ETA), TensorBoard scalars and checkpoints every
        `options.checkpoint_every` steps (by step count, so that all workers of a multi-worker job
        save together). `jit_compile`: XLA-compile the step (one replica only), or "auto": decide by
        timing a few steps each way on this machine first (`_probe_jit_compile`). Returns the
        examples/s measured after the first (compiling) call, or None."""
        log_every, checkpoint_every = self.options.log_every, self.options.checkpoint_every
        strategy, step = self.strategy, self.step
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            opts = tf.data.Options()
            opts.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
            dataset = dataset.with_options(opts)
        iterator = iter(strategy.experimental_distribute_dataset(dataset))

        @functools.cache  # the probe's compiled runners are the ones that train on
        def steps_runner(xla: bool):
            step_fn = tf.function(model.train_step, jit_compile=True) if xla else model.train_step

            @tf.function
            def run_steps(iterator, n):
                """Up to `n` steps; stops after the first whose logged losses (running means, so
                non-finite from then on) are not all finite. Returns the steps run."""
                done, finite = tf.constant(0), tf.constant(True)
                while done < n and finite:
                    logs = strategy.run(step_fn, args=(next(iterator),))
                    values = [
                        tf.reduce_all(tf.math.is_finite(v))
                        for v in strategy.experimental_local_results(logs)[0].values()
                    ]
                    finite = tf.reduce_all(tf.stack(values))
                    done += 1
                return done

            return run_steps

        t_start = time.time()
        if jit_compile == "auto":
            jit_compile, step = self._probe_jit_compile(steps_runner, iterator, total_steps - step, batch_size, step)
        run_steps = steps_runner(bool(jit_compile) and strategy.num_replicas_in_sync == 1)
        start_step, t_timed, timed_steps = self.step, None, 0
        while step < total_steps:
            n = min(log_every - step % log_every, checkpoint_every - step % checkpoint_every, total_steps - step)
            t0 = time.time()
            ran = int(run_steps(iterator, tf.constant(n)))
            if ran < n or not all(math.isfinite(float(m.result())) for m in model.metrics):
                self._diverged(model, step + ran)
            step += n
            if t_timed is None:  # the first call compiles; time from the second on
                t_timed = time.time()
            else:
                timed_steps += n
            logs = {m.name: float(m.result()) for m in model.metrics}
            for m in model.metrics:
                m.reset_state()
            # This window's rate (the run's average is what a phase change, e.g. LPIPS from
            # perceptual_start, would leave stale) and the ETA at it.
            rate = n * batch_size / (time.time() - t0)
            eta = (total_steps - step) * batch_size / max(rate, 1e-9)
            detail = format_logs(logs) if format_logs else "  ".join(f"{k} {v:.4f}" for k, v in logs.items())
            progress.log(f"step {step}/{total_steps}  {detail}  {rate:.0f} ex/s  ETA {progress.format_duration(eta)}")
            with self.writer.as_default(step=step):
                for k, v in logs.items():
                    tf.summary.scalar(f"train/{k}", v)
                tf.summary.scalar("train/examples_per_second", rate)
                if summaries:
                    summaries()
            if step % checkpoint_every == 0 or step == total_steps:
                checkpoints.save(self.manager, step)  # a collective under multi-worker: every worker saves
        self.writer.flush()
        self.step = step
        progress.log(f"Trained steps {start_step}..{step} in {time.time() - t_start:.0f}s.")
        return (timed_steps * batch_size / (time.time() - t_timed)) if timed_steps else None


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite: training stopped before saving anything of that state."""


def load_trained(stage: StageDir, build_fn, what: str, script: str):
    """(model, checkpoint path) of a finished stage: `build_fn(record)` rebuilds the model from the
    stage's config.json, then the newest readable checkpoint is restored.

    Raises:
      FileNotFoundError: no config.json or no checkpoint (naming `script`, which makes them).
      CheckpointError: checkpoints exist but none is readable.
    """
    workdir = os.path.dirname(stage.path)
    if not os.path.exists(stage.config):
        raise FileNotFoundError(f"No trained {what} in {workdir}: {stage.config} is missing. Run {script} first.")
    with open(stage.config) as f:
        model = build_fn(json.load(f))
    ckpt, manager = checkpoints.make_manager(model, stage.checkpoints)
    path = checkpoints.restore_newest(ckpt, manager)
    if path is None:
        raise FileNotFoundError(f"No checkpoint in {manager.directory}. Run {script} first.")
    return model, path
