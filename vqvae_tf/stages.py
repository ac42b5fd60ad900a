"""Stage functions behind the scripts that are more than one library call."""

from __future__ import annotations

import json
import os

import numpy as np

from vqvae_tf import codes, data, export, prior_training, tflite, training


def _trained_dataset(workdir: str) -> str:
    """The dataset the VQ-VAE of `workdir` was trained on."""
    with open(os.path.join(workdir, training.SUBDIR, "config.json")) as f:
        return json.load(f)["config"]["dataset"]


def _has_prior(workdir: str) -> bool:
    return os.path.exists(os.path.join(workdir, prior_training.SUBDIR, "config.json"))


def export_codes_stage(
    workdir: str, data_dir: str | None = None, batch_size: int = 500, overwrite: bool = False
) -> dict:
    """Encodes train/test with the latest VQ-VAE checkpoint of `workdir` into ``workdir/codes``.
    Skips the work when the codes there come from that same checkpoint (unless `overwrite`)."""
    model, checkpoint = training.load_trained_model_and_path(workdir)
    dataset = _trained_dataset(workdir)
    out_dir = os.path.join(workdir, "codes")
    if not overwrite and os.path.exists(os.path.join(out_dir, codes.META)):
        try:
            meta = codes.load_meta(out_dir)
        except codes.CodesError:
            meta = None
        if meta and meta.get("source_checkpoint") == os.path.basename(checkpoint):
            training.log_line(f"Codes in {out_dir} already come from {meta['source_checkpoint']}; skipping.")
            return meta
    return codes.export_codes(
        model,
        dataset,
        out_dir,
        data_dir=data_dir,
        source_checkpoint=os.path.basename(checkpoint),
        batch_size=batch_size,
        overwrite=True,
        log=training.log_line,
    )


def export_savedmodel_stage(workdir: str, export_dir: str, version: int | None = None, overwrite: bool = False) -> dict:
    """SavedModels of the VQ-VAE (and of prior + decoder when a prior is trained) under
    ``export_dir``, plus models.config and batching_parameters.txt. Returns {name: path}."""
    model = training.load_trained_model(workdir)
    paths = {"vqvae": export.export_vqvae(model, export_dir, version, overwrite)}
    training.log_line(f"Exported {paths['vqvae']}")
    if _has_prior(workdir):
        prior = prior_training.load_trained_prior(workdir)
        paths["prior"] = export.export_prior(prior, model, export_dir, version, overwrite)
        training.log_line(f"Exported {paths['prior']}")
    export.write_server_files(export_dir)
    return paths


def export_tflite_stage(
    workdir: str, export_dir: str, quantizations, data_dir: str | None = None, num_test_images: int = 1000
) -> dict:
    """TFLite encoder/decoder files and tflite_report.json, checked on real test images."""
    model = training.load_trained_model(workdir)
    images = np.concatenate(
        [
            x
            for x, _ in data.load(_trained_dataset(workdir), "test", data_dir)
            .batch(500)
            .take(-(-num_test_images // 500))
            .as_numpy_iterator()
        ]
    )
    report = tflite.export_tflite(model, export_dir, images[:num_test_images], quantizations)
    for q, r in report["models"].items():
        training.log_line(
            f"[tflite] {q}: decoder {r['decoder_bytes'] / 1024:.0f} KiB, max abs error {r['decoder_max_abs_error']:.2e}, "
            f"PSNR vs float {r['decoder_psnr_vs_float_db']:.1f} dB, encoder code agreement {r['encoder_code_agreement']:.4f}"
        )
    if _has_prior(workdir):
        prior = prior_training.load_trained_prior(workdir)
        generator_qs = [q for q in quantizations if q != "int8"]  # int8 calibration of a sampler loop: not offered
        report["generator"] = tflite.export_generator(prior, model, export_dir, generator_qs)
        for q, r in report["generator"].items():
            if r["converted"]:
                training.log_line(
                    f"[tflite] generator {q}: {r['bytes'] / 1024:.0f} KiB, code agreement with TF "
                    f"{r['code_agreement_vs_tensorflow']:.4f}, {r['latency_ms_one_sample']:.1f} ms per sample"
                )
            else:
                training.log_line(f"[tflite] generator {q}: not converted ({r['reason'][:200]})")
    return report
