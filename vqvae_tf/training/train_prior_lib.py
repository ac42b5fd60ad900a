"""Training of the prior (PixelCNN, transformer or MaskGIT) on exported codes (the library behind `python -m train.train_prior`).

Reads ``W/codes/`` and writes the stage directory ``W/prior/`` (layout: `vqvae_tf.training.workdir`).
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np
import tensorflow as tf

from vqvae_tf.configs import PRIOR_CONFIG_NAMES, PriorConfig, get_prior_config
from vqvae_tf.data import codes
from vqvae_tf.models import priors
from vqvae_tf.models.priors.pixelcnn import PixelCNN
from vqvae_tf.models.priors.sampling import sample_images
from vqvae_tf.training import loop, train_vqvae_lib
from vqvae_tf.training.options import RunOptions
from vqvae_tf.training.stage import Stage, StageContext, stage_flags, trained
from vqvae_tf.training.workdir import Workdir
from vqvae_tf.utils import files, images, progress


def build_prior(config: PriorConfig, meta: dict):
    """A new prior of `config` for the codes described by `meta` (codes/meta.json), compiled: the
    model of the family for the codes and `config.prior` (`vqvae_tf.models.priors`: a `PixelCNN`,
    `TransformerPrior` or `MaskGITPrior`, or a `HierarchicalPrior` for a VQ-VAE-2's two grids)."""
    network = {name: getattr(config, name) for name in priors.NETWORK_FIELDS}  # (a family reads its own)
    network.update(
        num_embeddings=meta["num_embeddings"],
        num_classes=meta["num_classes"] if config.conditional else 0,
        prior=config.prior,
    )
    prior = priors.family_for(meta, config.prior).build(network, meta)
    prior.compile(optimizer=config.make_optimizer())
    prior.optimizer.build(prior.trainable_variables)
    return prior


def fit_to_grids(config: PriorConfig, grids: dict, prior_family: str = priors.ONE_GRID) -> None:
    """Sizes `config` to the code `grids` ({name: (h, w)}) of an autoencoder whose codes' family is
    `prior_family` (its `prior_family`), as training will (`PriorFamily.fit_config`): a PixelCNN
    stack too shallow to see every earlier position of a grid is sized from it, saying so (a
    transformer sees the whole grid at any depth); a config that cannot model them is refused."""
    priors.for_autoencoder(prior_family, config.prior).fit_config(config, grids, fit=True)


def load_trained_prior(workdir: str):
    """The prior of ``W/prior`` at its latest readable checkpoint."""
    prior, _ = loop.load_trained(
        Workdir(workdir).prior,
        lambda saved: build_prior(PriorConfig(**saved["config"]).validate(), saved["codes_meta"]),
        "prior",
        "train.train_prior",
    )
    return prior


def sample_grid(prior, vqvae, columns: int = 10, seed: int = 0, temperature: float = 1.0):
    """uint8 grid of decoded samples: one row per class (conditional) or a columns x columns grid."""
    labels = np.repeat(np.arange(prior.num_classes, dtype=np.int32), columns) if prior.num_classes else None
    num_samples = len(labels) if labels is not None else columns * columns
    return images.grid(sample_images(prior, vqvae, num_samples, temperature, seed, labels), columns, scale=2)


def check_codes_data(meta: dict, options: RunOptions) -> None:
    """Raises ValueError when the data flags of `options` (--dataset, --data_dir) name other data
    than the codes were exported from: the prior trains on the codes, so the flags only guard."""
    saved = meta.get("data") or {"name": meta["dataset"]}
    if options.data.name is not None and options.data.name != saved["name"]:
        raise ValueError(
            f"--dataset={options.data.name}, but the codes in {Workdir(options.workdir).codes} were exported from "
            f"{saved['name']}: re-run train.export_codes with that dataset, or drop --dataset."
        )
    data_dir = options.data.data_dir
    if data_dir and saved.get("data_dir") and os.path.realpath(data_dir) != os.path.realpath(saved["data_dir"]):
        raise ValueError(
            f"--data_dir={data_dir}, but the codes were exported from {saved['data_dir']}: re-run "
            "train.export_codes with it, or drop --data_dir."
        )


def train_prior(
    config: PriorConfig, options: RunOptions, init_from: str | None = None, fit_to_codes: bool = True
) -> dict:
    """Trains (or resumes) the prior to `config.steps`, evaluates it on the test codes and writes
    metrics.json and samples.png. Returns the metrics. `init_from` (a preset name or directory)
    fine-tunes: the preset prior's network (and class conditioning) replaces the config's, and its
    weights start the run; its code grid, K and class count must be those of the codes.
    `fit_to_codes`: a stack too shallow for the codes' grid is sized from it (`fit_to_grids`);
    False (a depth the user asked for) refuses it instead."""
    options.validate()
    config.validate()
    workdir = Workdir(options.workdir)
    meta = codes.load_meta(workdir.codes)
    check_codes_data(meta, options)
    init = None
    family = priors.family_for(meta, config.prior)
    if init_from and family.cls is not PixelCNN:
        raise ValueError(
            "--init_from fine-tunes a VQ-VAE's PixelCNN prior (the presets'); VQ-VAE-2, transformer and "
            "MaskGIT priors train from scratch."
        )
    if init_from:
        init = PixelCNN.from_preset(init_from)
        want = (tuple(meta["latent_shape"]), meta["num_embeddings"])
        if (tuple(init.latent_shape), init.num_embeddings) != want or init.num_classes not in (0, meta["num_classes"]):
            raise ValueError(
                f"Preset prior {init_from} models {init.latent_shape[0]}x{init.latent_shape[1]} grids of "
                f"K={init.num_embeddings} codes with {init.num_classes} classes; the codes in {workdir.codes} are "
                f"{want[0][0]}x{want[0][1]} grids of K={want[1]} with {meta['num_classes']} classes."
            )
        for name in ("num_filters", "num_layers", "kernel_size", "dropout"):
            setattr(config, name, getattr(init, name))
        config.conditional = init.num_classes > 0
        progress.log(f"Fine-tuning the prior from preset {init_from}.")
    if config.conditional and not meta["num_classes"]:
        raise ValueError(f"--conditional needs class labels, but {meta['dataset']} has none.")
    family.check_config(config, PriorConfig())  # (a field its network does not read, set: refused)
    # Sized to the codes' grids where the family's network needs it (PixelCNN: a stack that sees
    # every earlier position), else refused before training.
    family.fit_config(config, codes.grid_shapes(meta), fit=fit_to_codes and init is None)
    record = {"config": dataclasses.asdict(config), "codes_meta": meta, "seed": options.seed, "init_from": init_from}
    with loop.stage_run(options, workdir.prior, record, config.architecture(), config.batch_size) as run:
        prior = run.build(lambda: build_prior(config, meta), config.steps)
        if init is not None and run.step == 0:
            for target, value in zip(prior.weights, init.weights, strict=True):
                target.assign(value)
        if run.step < config.steps:
            train = (
                codes.read_codes(workdir.codes, "train")
                .shuffle(60_000, seed=options.seed * 1_000_003 + run.step)
                .repeat()
                .batch(config.batch_size, drop_remainder=True)
                .prefetch(tf.data.AUTOTUNE)
            )
            progress.log(
                f"Training the {family.name} prior to step {config.steps} (batch {config.batch_size}, "
                f"{run.strategy.num_replicas_in_sync} replica(s))."
            )
            run.train(
                prior,
                train,
                config.steps,
                config.batch_size,
                format_logs=_format_logs if prior.exact_likelihood else _format_masked_logs,
            )
        if not run.chief:
            return {}
        return _evaluate_and_write(run, prior, options, workdir, meta)


def _format_logs(logs: dict) -> str:
    """The progress line: NLL, bits per code, and each level's bits per code for a prior of several grids."""
    levels = {k[len("bits_per_code_") :]: v for k, v in logs.items() if k.startswith("bits_per_code_")}
    line = f"nll {logs['loss']:.4f} nats  {logs['bits_per_code']:.3f} bits/code"
    return line + (f" ({', '.join(f'{k} {v:.3f}' for k, v in levels.items())})" if levels else "")


def _format_masked_logs(logs: dict) -> str:
    """MaskGIT's progress line: the masked-token NLL (not a likelihood of the grid)."""
    return f"masked nll {logs['loss']:.4f} nats  {logs['bits_per_code']:.3f} bits/masked code"


def _evaluate_and_write(run: loop.StageRun, prior, options: RunOptions, workdir: Workdir, meta) -> dict:
    progress.log("Evaluating the prior on the test codes...")
    # A known length: Keras warns "Your input ran out of data; interrupting training" at the end of
    # a dataset whose cardinality it cannot tell (a TFRecord file's), though evaluate reads it all.
    batches = math.ceil(meta["counts"]["test"] / options.eval_batch_size)
    test = codes.read_codes(workdir.codes, "test").batch(options.eval_batch_size)
    test = test.apply(tf.data.experimental.assert_cardinality(batches))
    results = prior.evaluate(test, verbose=0, return_dict=True)
    bits_per_code = float(results["bits_per_code"])
    metrics = {"prior": prior.prior_network, "conditional": bool(prior.num_classes)}
    if prior.exact_likelihood:
        metrics.update(_likelihood_metrics(prior, results, meta, workdir))
    else:
        metrics["test_masked_bits_per_code"] = bits_per_code
        metrics["test_masked_bits_per_code_note"] = (
            "MaskGIT has no exact likelihood: this is the masked-token NLL in bits per masked code (each test "
            "grid masked by the cosine schedule with seed [0, 1]), not -log2 p(z), so there is no bits/dim bound."
        )
    metrics.update(log2_num_embeddings=math.log2(meta["num_embeddings"]), steps=int(prior.optimizer.iterations.numpy()))
    vqvae = train_vqvae_lib.load_trained_model(options.workdir)
    grid = sample_grid(prior, vqvae, columns=options.num_sample_columns, seed=options.seed)
    images.write_png(workdir.samples_png, grid)
    files.atomic_write_json(run.stage.metrics, metrics)
    with run.writer.as_default(step=metrics["steps"]):
        tf.summary.scalar(
            "test/bits_per_code" if prior.exact_likelihood else "test/masked_bits_per_code", bits_per_code
        )
        tf.summary.image("samples", grid[None])
    run.writer.flush()
    progress.log("Prior metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float)))
    return metrics


def _likelihood_metrics(prior, results: dict, meta: dict, workdir: Workdir) -> dict:
    """Test bits per code of a prior with an exact likelihood, and the bits/dim bound when the
    VQ-VAE's reconstruction term is known."""
    bits_per_code = float(results["bits_per_code"])
    metrics = {
        "test_bits_per_code": bits_per_code,
        # VQ-VAE-2: each level's (the bottom one given the top codes).
        **{f"test_{k}": float(v) for k, v in results.items() if k in ("bits_per_code_top", "bits_per_code_bottom")},
    }
    vq_metrics = workdir.vqvae.read_metrics()
    if vq_metrics is not None:
        num_codes, dims = prior.num_codes, int(np.prod(meta["image_shape"]))
        # Section 3.3: -log p(x) <= -log p(x|z_q) - log p(z_q), in bits per image dimension; the
        # paper's own figure takes a uniform prior, -log p(z_q) = h w log K, during VQ-VAE training.
        reconstruction = vq_metrics["bits_per_dim_reconstruction"]
        metrics["bits_per_dim"] = bits_per_code * num_codes / dims + reconstruction
        metrics["bits_per_dim_uniform_prior"] = math.log2(meta["num_embeddings"]) * num_codes / dims + reconstruction
        target = "-log2 p(x|y), y the class label," if prior.num_classes else "-log2 p(x)"
        metrics["bits_per_dim_note"] = (
            f"upper bound on {target} per image dimension: (-log2 p(z_q) - log2 p(x|z_q)) / (H*W*C) on the "
            "test split; p(x|z_q): "
            + vq_metrics.get("reconstruction_likelihood", "decoder likelihood")
            + "; "
            + vq_metrics.get("reconstruction_likelihood_fit", "")
        )
    return metrics


def _run_stage(ctx: StageContext) -> None:
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
    train_prior(prior, dataclasses.replace(ctx.options, flags_text=text))


STAGE = Stage("train prior", _run_stage, lambda ctx: trained(ctx.workdir.prior, ctx.recipe.prior.steps))
