"""REPORT.md of a pipeline run: the metrics, the pictures and where the exports are."""

from __future__ import annotations

import os
import time

from vqvae_tf.models import autoencoders, presets, priors
from vqvae_tf.serving import export_presets_lib, savedmodel, tflite
from vqvae_tf.training.stage import Stage, StageContext
from vqvae_tf.training.train_vqvae_lib import quality_keys
from vqvae_tf.training.workdir import Workdir
from vqvae_tf.utils import files


def _fmt(value, digits=4):
    return f"{value:.{digits}g}" if isinstance(value, (int, float)) else str(value)


def write_report(workdir: str, paths: dict, seconds: float, preset_paths: dict | None = None) -> str:
    """W/REPORT.md: the metrics, the pictures and where the exports and presets are."""
    w = Workdir(workdir)

    def rel(path):  # links relative to REPORT.md
        return os.path.relpath(path, w.root)

    recon, usage, samples = rel(w.reconstructions_png), rel(w.codebook_usage_png), rel(w.samples_png)
    tflite_dir = rel(os.path.join(w.export, tflite.SUBDIR))
    vq = w.vqvae.read_metrics()
    prior = w.prior.read_metrics()
    source = (w.vqvae.read_config() or {}).get("data") or {"name": vq.get("dataset")}
    shape = "x".join(str(s) for s in (source.get("image_size") or [])) + (
        f"x{source['channels']}" if source.get("channels") else ""
    )
    dataset = f"`{source['name']}`" + (f" (`{source['data_dir']}`)" if source.get("data_dir") else "")
    dataset += f", images {shape}" if shape else ""
    tfl = tflite.read_report(w.export)
    vq_rows = "\n".join(f"| {k} | {_fmt(vq[k])} |" for k in quality_keys(vq) + ("steps", "images_per_second"))
    prior_rows = "\n".join(
        f"| {k} | {_fmt(prior.get(k))} |"
        for k in (
            "test_bits_per_code",
            "test_masked_bits_per_code",
            "test_bits_per_code_top",
            "test_bits_per_code_bottom",
            "log2_num_embeddings",
            "bits_per_dim",
            "bits_per_dim_uniform_prior",
            "steps",
        )
        if k in prior
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
        f"\nOn-device generator (`{tflite_dir}/generator_<q>.tflite`: prior sampling + decoding):\n\n"
        "| quantization | KiB | ms per sample | codes equal to TF |\n|---|---|---|---|\n" + generator_rows + "\n"
        if generator_rows
        else ""
    )
    classes = {kind: presets.class_name(path, kind) for kind, path in preset_paths.items()}
    presets_line = (
        f"- Presets (load with `{classes.get('vqvae', 'VQVAE')}.from_preset` / "
        f"`{classes.get('prior', 'PixelCNN')}.from_preset`, or `--preset` on the export and "
        f"sample scripts): {', '.join(f'`{k}`: `{rel(v)}`' for k, v in preset_paths.items())}; both at once: "
        f"`{rel(w.presets)}`\n"
        if preset_paths
        else ""
    )
    autoencoder = autoencoders.get((w.vqvae.read_config() or {}).get("config", {}).get("model", "vqvae"))
    network = prior.get("prior", "pixelcnn")
    codes_meta = (w.prior.read_config() or {}).get("codes_meta") or {"format_version": 1}
    family = priors.family_for(codes_meta, network)
    prior_name = family.describe(network)
    bound_note = (
        "`bits_per_dim_uniform_prior` is the same bound with the paper's uniform prior over the codes\n"
        f"(KL = log K per code); the gap to `bits_per_dim` is what the {prior_name} gains."
        if "bits_per_dim" in prior
        else ""
    )
    title = f"{autoencoder.title} + " + (f"{prior_name} prior" if family.one_grid else family.title)
    text = f"""# {title}: run report

Workdir `{os.path.abspath(workdir)}`, dataset {dataset}, total time {seconds / 60:.1f} min (this run).

## {autoencoder.title} (test split, {vq.get("test_examples")} images)

| metric | value |
|---|---|
{vq_rows}

Reconstruction likelihood: {vq.get("reconstruction_likelihood")}; {vq.get("reconstruction_likelihood_fit")}.

![reconstructions]({recon})

Originals (odd rows) above their reconstructions: [{recon}]({recon}).
Code usage on the test split: [{usage}]({usage}).

![codebook usage]({usage})

## Prior ({prior_name}{", class-conditional" if prior.get("conditional") else ""})

| metric | value |
|---|---|
{prior_rows}

{prior.get("bits_per_dim_note", prior.get("test_masked_bits_per_code_note", ""))}

{bound_note}

![samples]({samples})

Samples ([{samples}]({samples})){": one row per class" if prior.get("conditional") else ""}.

## Exports

- SavedModels (TF Serving base paths): {", ".join(f"`{k}`: `{v}`" for k, v in paths.items())}
- TF Serving config: `{rel(os.path.join(w.export, savedmodel.MODELS_CONFIG_FILE))}`, batching example `{rel(os.path.join(w.export, savedmodel.BATCHING_FILE))}`
- TFLite: `{tflite_dir}/` (report `{rel(tflite.report_path(w.export))}`)
{presets_line}
| TFLite quantization | decoder KiB | max abs error | PSNR vs float (dB) | encoder code agreement | decoder latency (ms, batch {tfl["latency_batch"]}) |
|---|---|---|---|---|---|
{tfl_rows}
{generator_table}"""
    files.atomic_write_text(w.report, text)
    return w.report


def _run_stage(ctx: StageContext) -> None:
    w = ctx.workdir
    preset_paths = export_presets_lib.export_presets_stage(w.root, command=ctx.command)
    ctx.results["report"] = write_report(w.root, ctx.results["paths"], time.time() - ctx.start, preset_paths)


STAGE = Stage("write presets and report", _run_stage)
