"""TFLite files of a workdir's trained models or of a preset (the library behind
`python -m export.export_tflite`)."""

from __future__ import annotations

import os

import numpy as np

from vqvae_tf.data.errors import DataError
from vqvae_tf.serving import tflite
from vqvae_tf.training import models_lib
from vqvae_tf.training.stage import Stage, StageContext
from vqvae_tf.training.workdir import read_json
from vqvae_tf.utils import files, progress


def export_tflite_stage(
    workdir: str | None,
    export_dir: str,
    quantizations,
    data_dir: str | None = None,
    num_test_images: int = 1000,
    preset: str | None = None,
) -> dict:
    """TFLite encoder/decoder files and tflite_report.json of `workdir`'s models or `preset`'s,
    checked on real test images of the data they were trained on."""
    model = models_lib.load_vqvae(workdir, preset)
    source = models_lib.data_source(workdir, preset, data_dir)
    try:
        images = _images(source, "test", num_test_images)
    except DataError:  # (a small image folder's held-out split may be empty: then its training images)
        images = _images(source, "train", num_test_images)
    report = tflite.export_tflite(model, export_dir, images, quantizations)
    for q, r in report["models"].items():
        progress.log(
            f"[tflite] {q}: decoder {r['decoder_bytes'] / 1024:.0f} KiB, max abs error {r['decoder_max_abs_error']:.2e}, "
            f"PSNR vs float {r['decoder_psnr_vs_float_db']:.1f} dB, encoder code agreement {r['encoder_code_agreement']:.4f}"
        )
    # The on-device generator covers a VQ-VAE's prior (PixelCNN, transformer, MaskGIT), not VQ-VAE-2's pair.
    if models_lib.has_prior(workdir, preset) and len(model.code_grids) == 1:
        prior = models_lib.load_prior(workdir, preset)
        generator_qs = [q for q in quantizations if q != "int8"]  # int8 calibration of a sampler loop: not offered
        report["generator"] = tflite.export_generator(prior, model, export_dir, generator_qs)
        for q, r in report["generator"].items():
            if r["converted"]:
                progress.log(
                    f"[tflite] generator {q}: {r['bytes'] / 1024:.0f} KiB, code agreement with TF "
                    f"{r['code_agreement_vs_tensorflow']:.4f}, {r['latency_ms_one_sample']:.1f} ms per sample"
                )
            else:
                progress.log(f"[tflite] generator {q}: not converted ({r['reason'][:200]})")
    return report


def _images(source, split: str, n: int) -> np.ndarray:
    batches = [x for x, _ in source.load(split).batch(500).take(-(-n // 500)).as_numpy_iterator()]
    if not batches:
        raise DataError(f"No {split} images in {source.data_dir or source.name}.")
    return np.concatenate(batches)[:n]


def _stage_done(ctx: StageContext) -> str | None:
    w = ctx.workdir
    marker = read_json(w.tflite_marker) or {}
    made = list(marker.get("quantizations", tflite.QUANTIZATIONS))  # (a marker from before the flag: all)
    wanted = list(ctx.quantizations or tflite.QUANTIZATIONS)
    same = marker.get("vqvae") == ctx.sources()["vqvae"] and made == wanted
    return (
        "TFLite files of this checkpoint exist already"
        if same and os.path.exists(tflite.report_path(w.export))
        else None
    )


def _run_stage(ctx: StageContext) -> None:
    w = ctx.workdir
    quantizations = tuple(ctx.quantizations or tflite.QUANTIZATIONS)
    export_tflite_stage(w.root, w.export, quantizations, ctx.options.data.data_dir)
    files.atomic_write_json(w.tflite_marker, {"vqvae": ctx.sources()["vqvae"], "quantizations": list(quantizations)})


STAGE = Stage("convert to TFLite", _run_stage, _stage_done)
