"""The main job: VQ-VAE -> codes -> prior -> SavedModels -> TFLite -> REPORT.md.

Each stage skips work already done, so re-running after an interruption continues where it
stopped (training stages resume from their checkpoints).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import tensorflow as tf

from vqvae_tf import codes, configs, io_utils, prior_training, stages, tflite, training

PRESETS = ("default", "quick")


@dataclasses.dataclass
class PipelineOptions:
    workdir: str
    preset: str = "default"
    dataset: str | None = None
    data_dir: str | None = None
    strategy: str = "default"
    mixed_precision: str = "none"
    seed: int = 0
    vqvae_steps: int | None = None
    prior_steps: int | None = None
    flags_text: str | None = None


def preset_configs(preset: str, dataset: str | None = None):
    """(VQVAEConfig, PriorConfig, tflite quantizations) of a pipeline preset. The VQ-VAE config is
    the dataset's own preset when there is one (`cifar10`), else the Fashion-MNIST one."""
    if preset not in PRESETS:
        raise ValueError(f"Unknown pipeline preset {preset!r}; choose one of {', '.join(PRESETS)}.")
    dataset = dataset or "fashion_mnist"
    vq = configs.get_config(dataset if dataset in configs.PRESET_NAMES else "fashion_mnist")
    vq.dataset = dataset
    prior = prior_training.PriorConfig(conditional=True)
    if preset == "quick":
        vq.steps = 800
        prior = dataclasses.replace(prior, num_layers=4, steps=600)
    return vq, prior, tflite.QUANTIZATIONS


def _done(path: str, key: str, value) -> bool:
    try:
        with open(path) as f:
            return json.load(f).get(key) == value
    except (OSError, ValueError):
        return False


def _latest(workdir: str, sub: str) -> str | None:
    return tf.train.latest_checkpoint(os.path.join(workdir, sub, "checkpoints"))


def run_pipeline(options: PipelineOptions) -> dict:
    vq_config, prior_config, quantizations = preset_configs(options.preset, options.dataset)
    if options.vqvae_steps:
        vq_config.steps = options.vqvae_steps
    if options.prior_steps:
        prior_config.steps = options.prior_steps
    vq_config.validate()
    prior_config.validate()
    w = options.workdir
    io_utils.ensure_writable_dir(w)
    if options.flags_text is not None:
        io_utils.atomic_write_text(os.path.join(w, "pipeline_flags.txt"), options.flags_text)
    export_dir = os.path.join(w, "export")
    start = time.time()
    names = ["train VQ-VAE", "export codes", "train prior", "export SavedModels", "convert to TFLite", "write report"]

    def banner(i):
        training.log_line(
            f"\n=== [{i + 1}/{len(names)}] {names[i]}  (elapsed {training.format_duration(time.time() - start)}) ==="
        )

    banner(0)
    vq_metrics_path = os.path.join(w, "vqvae", "metrics.json")
    if _done(vq_metrics_path, "steps", vq_config.steps):
        training.log_line(f"Done already ({vq_metrics_path}); skipping.")
    else:
        training.train_and_evaluate(
            vq_config,
            training.RunOptions(
                workdir=w,
                data_dir=options.data_dir,
                strategy=options.strategy,
                mixed_precision=options.mixed_precision,
                seed=options.seed,
                log_every=500,
                checkpoint_every=1000,
            ),
        )

    banner(1)
    stages.export_codes_stage(w, options.data_dir)

    banner(2)
    # Class-conditional when the dataset has labels.
    prior_config.conditional = bool(codes.load_meta(os.path.join(w, "codes"))["num_classes"])
    prior_metrics_path = os.path.join(w, "prior", "metrics.json")
    if _done(prior_metrics_path, "steps", prior_config.steps):
        training.log_line(f"Done already ({prior_metrics_path}); skipping.")
    else:
        prior_training.train_prior(
            prior_config,
            prior_training.PriorRunOptions(
                workdir=w, strategy=options.strategy, seed=options.seed, log_every=500, checkpoint_every=1000
            ),
        )

    sources = {"vqvae": _latest(w, "vqvae"), "prior": _latest(w, "prior")}
    banner(3)
    saved_path = os.path.join(export_dir, "savedmodel_export.json")
    if _done(saved_path, "sources", sources):
        training.log_line("SavedModels of these checkpoints exist already; skipping.")
        with open(saved_path) as f:
            paths = json.load(f)["paths"]
    else:
        paths = stages.export_savedmodel_stage(w, export_dir)
        io_utils.atomic_write_json(saved_path, {"sources": sources, "paths": paths})

    banner(4)
    report_path = os.path.join(export_dir, "tflite", "tflite_report.json")
    tflite_marker = os.path.join(export_dir, "tflite", "source.json")
    if os.path.exists(report_path) and _done(tflite_marker, "vqvae", sources["vqvae"]):
        training.log_line("TFLite files of this checkpoint exist already; skipping.")
    else:
        stages.export_tflite_stage(w, export_dir, quantizations, options.data_dir)
        io_utils.atomic_write_json(tflite_marker, {"vqvae": sources["vqvae"]})

    banner(5)
    report = write_report(w, paths, time.time() - start)
    training.log_line(f"Done in {training.format_duration(time.time() - start)}. Report: {report}")
    return {"report": report, "paths": paths}


def _fmt(value, digits=4):
    return f"{value:.{digits}g}" if isinstance(value, (int, float)) else str(value)


def write_report(workdir: str, paths: dict, seconds: float) -> str:
    """WORKDIR/REPORT.md: the metrics, the pictures and where the exports are."""

    def load(*parts):
        with open(os.path.join(workdir, *parts)) as f:
            return json.load(f)

    vq = load("vqvae", "metrics.json")
    prior = load("prior", "metrics.json")
    tfl = load("export", "tflite", "tflite_report.json")
    vq_rows = "\n".join(f"| {k} | {_fmt(vq[k])} |" for k in training.QUALITY_KEYS + ("steps", "images_per_second"))
    prior_rows = "\n".join(
        f"| {k} | {_fmt(prior.get(k))} |"
        for k in ("test_bits_per_code", "log2_num_embeddings", "bits_per_dim", "steps")
    )
    tfl_rows = "\n".join(
        f"| {q} | {r['decoder_bytes'] / 1024:.0f} | {r['decoder_max_abs_error']:.2e} | {r['decoder_psnr_vs_float_db']:.1f} | "
        f"{r['encoder_code_agreement']:.4f} | {r['decoder_latency_ms']:.3f} |"
        for q, r in tfl["models"].items()
    )
    generator = tfl.get("generator", {})
    generator_rows = "\n".join(
        f"| {q} | {r['bytes'] / 1024:.0f} | {r['latency_ms_one_sample']:.1f} | {r['code_agreement_vs_tensorflow']:.4f} |"
        for q, r in generator.items()
        if r.get("converted")
    )
    generator_table = (
        "\nOn-device generator (`export/tflite/generator_<q>.tflite`: prior sampling + decoding):\n\n"
        "| quantization | KiB | ms per sample | codes equal to TF |\n|---|---|---|---|\n" + generator_rows + "\n"
        if generator_rows
        else ""
    )
    text = f"""# VQ-VAE + PixelCNN prior: run report

Workdir `{os.path.abspath(workdir)}`, dataset `{vq.get("dataset")}`, total time {seconds / 60:.1f} min (this run).

## VQ-VAE (test split, {vq.get("test_examples")} images)

| metric | value |
|---|---|
{vq_rows}

Reconstruction likelihood: {vq.get("reconstruction_likelihood")}.

![reconstructions](vqvae/reconstructions.png)

Originals (odd rows) above their reconstructions: [vqvae/reconstructions.png](vqvae/reconstructions.png).
Code usage on the test split: [vqvae/codebook_usage.png](vqvae/codebook_usage.png).

![codebook usage](vqvae/codebook_usage.png)

## Prior (gated PixelCNN{", class-conditional" if prior.get("conditional") else ""})

| metric | value |
|---|---|
{prior_rows}

{prior.get("bits_per_dim_note", "")}

![samples](prior/samples.png)

Samples ([prior/samples.png](prior/samples.png)){": one row per class" if prior.get("conditional") else ""}.

## Exports

- SavedModels (TF Serving base paths): {", ".join(f"`{k}`: `{v}`" for k, v in paths.items())}
- TF Serving config: `export/models.config`, batching example `export/batching_parameters.txt`
- TFLite: `export/tflite/` (report `export/tflite/tflite_report.json`)

| TFLite quantization | decoder KiB | max abs error | PSNR vs float (dB) | encoder code agreement | decoder latency (ms, batch {tfl["latency_batch"]}) |
|---|---|---|---|---|---|
{tfl_rows}
{generator_table}"""
    path = os.path.join(workdir, "REPORT.md")
    io_utils.atomic_write_text(path, text)
    return path
