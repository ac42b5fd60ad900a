"""Training and evaluation of the VQ-VAE (the library behind `python -m train.train_vqvae`).

Writes the stage directory ``W/vqvae/`` (layout: `vqvae_tf.training.workdir`).
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from vqvae_tf import data
from vqvae_tf.configs import VQVAEConfig, config_from_dict
from vqvae_tf.layers.quantizers import option_fields
from vqvae_tf.losses.objective import ImageLossConfig
from vqvae_tf.training import loop, precision
from vqvae_tf.training.evaluation import LIKELIHOOD_FIT_EXAMPLES, QUALITY_KEYS, evaluate, quality_keys  # noqa: F401 (API)
from vqvae_tf.training.options import RunOptions
from vqvae_tf.training.stage import Stage, StageContext, flag_name, stage_flags, trained
from vqvae_tf.training.workdir import Workdir
from vqvae_tf.utils import files, images, progress


def build_vqvae(config: VQVAEConfig, data_variance: float, seed: int, for_training: bool = False):
    """A new VQ-VAE (or VQ-VAE-2, for a `VQVAE2Config`) of `config`, compiled with its optimizer,
    all state created (for checkpoints). `for_training` adds the config's training objective
    (L1, LPIPS, discriminator) when its losses are not the model's own."""
    model = config.build(data_variance=data_variance, seed=seed)
    if getattr(config, "trainable", "all") == "decoder":
        model.freeze_codes()
    model.compile(optimizer=config.make_optimizer())
    model.optimizer.build(model.trainable_variables)
    if for_training:
        model.use_objective(config.make_objective(model.image_shape))
    return model


def load_trained_model(workdir: str):
    """The VQ-VAE (or VQ-VAE-2) of ``W/vqvae`` at its latest readable checkpoint (for export and
    codes)."""
    return load_trained_model_and_path(workdir)[0]


def load_trained_model_and_path(workdir: str):
    """(VQVAE, path of the checkpoint it was restored from)."""
    return loop.load_trained(
        Workdir(workdir).vqvae,
        lambda saved: build_vqvae(config_from_dict(saved["config"]), saved["data_variance"], saved.get("seed", 0)),
        "VQ-VAE",
        "train.train_vqvae",
    )


def trained_data_source(workdir: str, **overrides) -> data.DataSource:
    """The `DataSource` the VQ-VAE of `workdir` was trained on (its directory, image size and
    channels), with the `overrides` that are not None (e.g. ``data_dir`` after moving the data)."""
    record = Workdir(workdir).vqvae.read_config()
    if record is None:
        raise FileNotFoundError(f"No trained VQ-VAE in {workdir}. Run train.train_vqvae first.")
    saved = record.get("data") or {"name": record["config"]["dataset"]}
    return data.DataSource.from_dict(saved, **overrides)


def adopt_network(config, preset_model, fields) -> list:
    """Sets `fields` of `config` to `preset_model`'s constructor values; returns those changed."""
    saved = preset_model.get_config()
    changed = []
    for name in fields:
        value = tuple(saved[name]) if isinstance(saved.get(name), list) else saved.get(name)
        if name in saved and value != getattr(config, name):
            changed.append(f"{name}={value!r}")
            setattr(config, name, value)
    return changed


def check_splits(config: VQVAEConfig, info, source: data.DataSource, fit_batch: bool = False) -> None:
    """Refuses data without a held-out test split or with fewer training images than one batch;
    with `fit_batch` (the batch size was not chosen) a small training split lowers the batch to
    its size instead, with a note."""
    counts = info.num_examples
    train, test = counts.get("train", 0), counts.get("test", 0)
    if not test:
        fraction = f" --test_fraction={source.test_fraction} holds out none of them;" if source.test_fraction else ""
        raise data.DataError(
            f"{source.describe()} has no held-out test images ({train} training images):{fraction} add images, "
            "raise --test_fraction or add a test/ folder (the test split is evaluated after training)."
        )
    if fit_batch and 0 < train < config.batch_size:
        progress.log(
            f"Note: {source.describe()} has {train} training images, fewer than the config's batch of "
            f"{config.batch_size}: training with batches of {train} (--batch_size chooses)."
        )
        config.batch_size = train
    if train < config.batch_size:
        raise data.DataError(
            f"{source.describe()} has {train} training images, fewer than one "
            f"batch of {config.batch_size}: add images or lower --batch_size."
        )


def train_and_evaluate(
    config: VQVAEConfig,
    options: RunOptions,
    init_from: str | None = None,
    reinit_codebook: bool = False,
    fit_batch: bool = False,
) -> dict:
    """Trains (or resumes) to `config.steps`, evaluates on the full test split and writes the
    artifacts. Returns the metrics dict written to metrics.json. `fit_batch`: a training split
    smaller than the batch lowers it (`check_splits`; the script's default without --batch_size).

    `init_from` (a preset name or directory) fine-tunes: the preset's network replaces the
    config's, and its weights start the run (a resumed run continues from its checkpoints);
    `reinit_codebook` then re-runs the k-means install of the codebook on the first batch."""
    options.validate()
    if reinit_codebook and not init_from:
        raise ValueError("--reinit_codebook re-initialises a preset's codebook: it needs --init_from.")
    init = None
    if init_from:
        init = config.model_cls.from_preset(init_from)
        changed = adopt_network(config, init, [f for f in config.network_kwargs() if f != "image_shape"])
        progress.log(
            f"Fine-tuning from preset {init_from}" + (f" (its network: {', '.join(changed)})." if changed else ".")
        )
    source = options.data_source(config.dataset)
    config.dataset = source.name
    info = source.info()
    source = source.resolved()
    fit_to_data(config, info.image_shape, source)
    if init is not None and tuple(init.image_shape) != tuple(config.image_shape):
        raise ValueError(
            f"Preset {init_from} takes {'x'.join(map(str, init.image_shape))} images, but "
            f"{source.describe()} gives {'x'.join(map(str, config.image_shape))}: pass --image_size and "
            "--channels to match."
        )
    check_splits(config, info, source, fit_batch)
    stage = Workdir(options.workdir).vqvae
    fingerprint = source.fingerprint()
    saved = stage.read_config() if tf.train.latest_checkpoint(stage.checkpoints) else None
    if saved and saved.get("data_fingerprint") not in (None, fingerprint):
        progress.log(
            f"Note: the data of {source.describe()} changed since this run started (fingerprint "
            f"{saved['data_fingerprint']} -> {fingerprint}); training continues on the new contents, "
            f"keeping the run's pixel variance {saved['data_variance']:.5f}."
        )
    variance = saved["data_variance"] if saved and "data_variance" in saved else source.pixel_variance()
    options, precision_choice = _resolve_precision(options, config, variance, saved)
    record = {
        "config": config.to_dict(),
        "data": source.to_dict(),
        "data_fingerprint": fingerprint,
        "data_variance": variance,
        "seed": options.seed,
        "strategy": str(options.strategy),
        "mixed_precision": options.mixed_precision,
        "mixed_precision_choice": precision_choice,
        "init_from": init_from,
        "reinit_codebook": reinit_codebook,
    }
    with loop.stage_run(options, stage, record, config.architecture(), config.batch_size) as run:
        model = run.build(lambda: build_vqvae(config, variance, options.seed, for_training=True), config.steps)
        if init is not None and run.step == 0:
            for target, value in zip(model.weights, init.weights, strict=True):
                target.assign(value)
            if reinit_codebook:
                for quantizer in model.quantizers.values():
                    quantizer.reinitialize()
        images_per_second = None
        if run.step < config.steps:
            images_per_second = _train(run, model, config, options, source)
        if not run.chief:
            return {}
        return _evaluate_and_write(run, model, config, options, images_per_second, source)


def _resolve_precision(
    options: RunOptions, config, variance: float, saved: dict | None
) -> tuple[RunOptions, str | None]:
    """`--mixed_precision=auto` resolved: a resumed run keeps the choice it made when it started
    (`saved`: its config.json), so that it trains on as an uninterrupted run would; a run of fewer
    than `precision.MIN_PROBE_STEPS` steps trains in float32; else `precision.choose` probes this
    config's train step (one replica's batch). The choice and its reason are logged and added to
    flags.txt as a comment."""
    if options.mixed_precision != "auto":
        return options, None
    earlier = (saved or {}).get("mixed_precision_choice") or ""
    if earlier.startswith("auto -> "):
        policy, why = saved["mixed_precision"], f"this run's choice when it started ({earlier[len('auto -> ') :]})"
    elif config.steps < precision.MIN_PROBE_STEPS:
        policy = "none"
        why = f"a run of {config.steps} steps (under {precision.MIN_PROBE_STEPS}) trains in float32 without a probe"
    else:
        # One replica's batch when the strategy is an object; a strategy by name is not built twice
        # in one process (a second MirroredStrategy mixes up collectives): the global batch stands in.
        replicas = options.strategy.num_replicas_in_sync if isinstance(options.strategy, tf.distribute.Strategy) else 1
        batch = max(1, config.batch_size // replicas)
        images = tf.random.stateless_uniform([batch, *config.image_shape], seed=[0, 0])
        policy, why = precision.choose(lambda: build_vqvae(config, variance, options.seed, for_training=True), images)
    progress.log(f"mixed_precision=auto -> {policy}: {why}.")
    text = options.flags_text
    if text is not None:
        text = text.rstrip("\n") + f"\n# --mixed_precision=auto chose {policy}: {why}.\n"
    return dataclasses.replace(options, mixed_precision=policy, flags_text=text), f"auto -> {policy}: {why}"


def fit_to_data(config: VQVAEConfig, image_shape, source: data.DataSource | None = None) -> VQVAEConfig:
    """Sets `config.image_shape` to the data's `image_shape` (H, W, C), validated.

    Raises:
      ValueError: the config's downsampling does not divide the image size (naming both).
    """
    h, w, c = (int(s) for s in image_shape)
    d, factor = config.total_downsample, config.downsample_text
    if h % d or w % d:
        where = f" of {source.describe()}" if source else ""
        raise ValueError(
            f"Images{where} are {h}x{w}, which config {config.name!r} ({factor}) cannot divide into "
            f"codes. Pass --image_size with multiples of {d} (e.g. --image_size={max(d, h // d * d)},"
            f"{max(d, w // d * d)}) or pick another --config."
        )
    config.image_shape = (h, w, c)
    return config.validate()


def _train(run: loop.StageRun, model, config: VQVAEConfig, options: RunOptions, source: data.DataSource):
    # One stream of batches per seed; a resumed run skips the batches it has trained on, so that
    # it sees what an uninterrupted run would (and reaches the same weights).
    if run.step:
        progress.log(f"Skipping the {run.step} batches trained before the resume...")
    train = data.batched(
        source.load("train"), config.batch_size, training=True, seed=options.seed * 1_000_003, skip_batches=run.step
    )

    # Log suffixes: "" for a VQ-VAE's one grid, "_top" / "_bottom" for a VQ-VAE-2's.
    quantizers = {name.replace("codes", ""): quantizer for name, quantizer in model.quantizers.items()}

    def summaries():
        for suffix, quantizer in quantizers.items():
            if hasattr(quantizer, "code_usage"):  # FSQ keeps no usage statistics
                tf.summary.histogram(f"train/code_usage_ema{suffix}", quantizer.code_usage)

    def line(logs):
        levels = "  ".join(
            f"commit{s} {logs[f'commitment_loss{s}']:.4f}  perplexity{s} {logs[f'perplexity{s}']:.1f}"
            for s in quantizers
        )
        entropy = f"  entropy {logs['entropy_loss']:.4f}" if "entropy_loss" in logs else ""
        gan = "".join(
            f"  {label} {logs[key]:.4f}"
            for key, label in (
                ("perceptual_loss", "lpips"),
                ("generator_loss", "g"),
                ("discriminator_loss", "d"),
                ("adaptive_weight", "lambda"),
            )
            if key in logs
        )
        return (
            f"loss {logs['loss']:.4f}  recon {logs['reconstruction_loss']:.4f}  {levels}{entropy}{gan}  "
            f"restarts/step {logs['restarts']:.2f}"
        )

    progress.log(
        f"Training {config.dataset} to step {config.steps} (batch {config.batch_size}, "
        f"{run.strategy.num_replicas_in_sync} replica(s))."
    )
    return run.train(model, train, config.steps, config.batch_size, config.jit_compile, line, summaries)


def _evaluate_and_write(run, model, config, options, images_per_second, source: data.DataSource) -> dict:
    stage = run.stage
    test = data.batched(source.load("test"), options.eval_batch_size, training=False)
    progress.log("Evaluating on the full test split...")
    fit = data.batched(
        source.load("train").take(LIKELIHOOD_FIT_EXAMPLES),
        options.eval_batch_size,
        training=False,
    )
    # Residual VQ's counts: its stages' codes one after another.
    metrics, counts = evaluate(model, test, fit if model.likelihood == "mse" else None, with_counts=True)
    if images_per_second is None:  # nothing trained in this run: keep the speed measured before
        images_per_second = (stage.read_metrics() or {}).get("images_per_second")
    metrics.update(
        steps=int(model.optimizer.iterations.numpy()),
        images_per_second=images_per_second,
        num_embeddings=config.num_embeddings,
        dataset=config.dataset,
    )
    files.atomic_write_json(stage.metrics, metrics)

    x, _ = next(iter(test))
    x = x[:32]
    grid = images.comparison_grid(x.numpy(), model(x).numpy())
    images.write_png(Workdir(options.workdir).reconstructions_png, grid)
    images.write_png(
        Workdir(options.workdir).codebook_usage_png,
        images.code_usage_chart(counts, title=f"Code usage on the {config.dataset} test split"),
    )
    with run.writer.as_default(step=metrics["steps"]):
        for k in quality_keys(metrics):
            tf.summary.scalar(f"test/{k}", metrics[k])
        tf.summary.histogram("test/code_counts", counts)
        tf.summary.image("test/reconstructions", grid[None])
    run.writer.flush()
    progress.log("Test metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float)))
    return metrics


def vqvae_stage_flags(ctx: StageContext) -> str | None:
    """W/vqvae/flags.txt of a pipeline run (`stage_flags`): train.train_vqvae's flags."""
    vq = ctx.recipe.vqvae
    given = [flag_name(x) for x in (ctx.pipeline_flags or "").splitlines()]
    # The quantizer options the pipeline was given (a bool one may be written --noNAME).
    quantizer = [name for name in (*option_fields(), "quantizer") if name in given or f"no{name}" in given]
    losses = [f.name for f in dataclasses.fields(ImageLossConfig) if f.name in given]  # (the loss flags given)
    fields = ("steps", "batch_size", "learning_rate", "lr_schedule", *quantizer, *losses)
    return stage_flags(ctx, vq, fields, config=vq.name, model=vq.model)


def _run_stage(ctx: StageContext) -> None:
    text = vqvae_stage_flags(ctx)
    train_and_evaluate(ctx.recipe.vqvae, dataclasses.replace(ctx.options, flags_text=text))


STAGE = Stage("train VQ-VAE", _run_stage, lambda ctx: trained(ctx.workdir.vqvae, ctx.recipe.vqvae.steps))
