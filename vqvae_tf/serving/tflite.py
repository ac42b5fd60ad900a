"""TFLite / LiteRT models for phones: conversion (builtin ops only), parity checks, the report.

`export_tflite_lib` converts a workdir's models with these (`python -m export.export_tflite`).

Writes ``E/tflite/decoder_<q>.tflite`` (signature ``decode``: codes int32 [B,h,w], or [B,h,w,Q]
for residual VQ, or VQ-VAE-2's ``codes_top`` and ``codes_bottom`` -> images float32 [B,H,W,C]) and
``E/tflite/encoder_<q>.tflite`` (signature ``encode``: images -> the same codes) for q in float32,
float16, dynamic_range, int8, plus ``tflite_report.json`` with each file's size, error against the
float Keras model on real test data, PSNR and mean latency under the LiteRT interpreter. Conversion allows builtin ops only: anything that would need Flex (SELECT_TF_OPS),
which LiteRT cannot run, fails the conversion instead.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import warnings

import keras
import numpy as np
import tensorflow as tf

from vqvae_tf import _console
from vqvae_tf.utils import files

QUANTIZATIONS = ("float32", "float16", "dynamic_range", "int8")
SUBDIR = "tflite"  # EXPORT_DIR/tflite
REPORT = "tflite_report.json"
# Parity bars on the decoder (max |tflite - keras| over real test codes, pixels in [0, 1]).
MAX_ABS_ERROR = {"float32": 1e-4, "float16": 1e-2}


class ConversionError(RuntimeError):
    """The converter could not produce a builtin-only model."""


def _save_signature(model, fn, specs: list, key: str, directory: str) -> None:
    # ExportArchive (not a bare tf.Module) so that the converter freezes the Keras variables
    # instead of keeping them as resource variables (VAR_HANDLE / READ_VARIABLE).
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(key, fn, input_signature=specs)
    archive.write_out(directory, verbose=False)


def convert(saved_model_dir: str, signature_key: str, quantization: str, representative_dataset=None) -> bytes:
    """SavedModel signature -> .tflite bytes with builtin ops only."""
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}.")
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, signature_keys=[signature_key])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "dynamic_range":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantization == "int8":
        if representative_dataset is None:
            raise ValueError("int8 quantization needs a representative dataset.")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset
        # Full integer inside; ops without an int8 kernel (e.g. the codebook GATHER on int32
        # indices) stay builtin float rather than Flex. Inputs/outputs keep their dtypes.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        with _console.native_output_filtered(), warnings.catch_warnings():
            # Int8 calibration runs TF's own deprecated tf.lite.Interpreter: its warning is not ours.
            warnings.filterwarnings("ignore", message=r"\s*Warning: tf.lite.Interpreter is deprecated")
            return converter.convert()
    except Exception as e:  # ConverterError, with the offending ops in its message
        raise ConversionError(
            f"Converting signature {signature_key!r} ({quantization}) with builtin ops only failed: {e}"
        ) from e


def _interpreter(model_bytes: bytes):
    from ai_edge_litert.interpreter import Interpreter

    with _console.native_output_filtered():  # LiteRT prints the XNNPACK delegate's creation
        interpreter = Interpreter(model_content=model_bytes)
        interpreter.allocate_tensors()  # (where the delegate is applied)
    return interpreter


# What a LiteRT signature cannot check itself (LiteRT has no Assert): `run_signature` checks the
# inputs' names, dtypes and shapes against the signature, and these ranges, before running it.
VALUE_RANGES = {  # (low, high, high included, message)
    "images": (0.0, 1.0, True, "images must be finite and in [0, 1] (floats; divide uint8 pixels by 255)"),
    "uniforms": (0.0, 1.0, False, "uniforms must be finite and in [0, 1) (a 1 picks code K, out of range)"),
}


def check_inputs(details: dict, key: str, inputs: dict) -> dict:
    """`inputs` as arrays, checked against a signature's input `details` (LiteRT's
    ``get_input_details()``): the names, dtypes, ranks and every dimension but the batch, the
    `VALUE_RANGES`, temperature finite and > 0, no empty dimension but the batch (MaskGIT's S = 0
    steps), and one batch size for every batched input (labels and uniforms). ValueError naming the
    input otherwise."""
    if set(inputs) != set(details):
        raise ValueError(f"Signature {key!r} takes inputs {sorted(details)}, got {sorted(inputs)}.")
    arrays, batches = {}, {}
    for name, value in inputs.items():
        array, want = np.asarray(value), details[name]
        if array.dtype != want["dtype"]:
            raise ValueError(f"{key}: {name} must be {np.dtype(want['dtype']).name}, got {array.dtype.name}.")
        expected = [int(d) for d in want["shape_signature"]]
        fits = array.ndim == len(expected) and all(e in (-1, a) for e, a in zip(expected[1:], array.shape[1:]))
        if not fits:
            shown = ", ".join("B" if i == 0 else str(d) for i, d in enumerate(expected))
            raise ValueError(f"{key}: {name} must have shape [{shown}], got {list(array.shape)}.")
        if 0 in array.shape[1:]:
            raise ValueError(f"{key}: {name} has an empty dimension: shape {list(array.shape)}.")
        if expected and expected[0] == -1:
            batches[name] = array.shape[0]
        if name in VALUE_RANGES and array.size:
            low, high, closed, message = VALUE_RANGES[name]
            top_ok = array.max() <= high if closed else array.max() < high
            if not (np.isfinite(array).all() and array.min() >= low and top_ok):
                raise ValueError(f"{key}: {message}; got values from {array.min()} to {array.max()}.")
        if name == "temperature" and not (np.isfinite(array).all() and (array > 0).all()):
            raise ValueError(f"{key}: temperature must be finite and > 0, got {array}.")
        arrays[name] = array
    if len(set(batches.values())) > 1:
        raise ValueError(f"{key}: the inputs must have one batch size, got {batches}.")
    return arrays


def run_signature(model_bytes: bytes, key: str, **inputs) -> dict:
    """Runs one LiteRT signature (resizing the batch as needed) on inputs checked by `check_inputs`."""
    runner = _interpreter(model_bytes).get_signature_runner(key)
    return runner(**check_inputs(runner.get_input_details(), key, inputs))


def op_names(model_bytes: bytes) -> set[str]:
    """Builtin/custom op names used by a .tflite model (a Flex op shows up as 'Flex...')."""
    interpreter = _interpreter(model_bytes)
    return {d["op_name"] for d in interpreter._get_ops_details()}


def _latency_ms(model_bytes: bytes, key: str, inputs: dict, repeats: int = 20) -> float:
    runner = _interpreter(model_bytes).get_signature_runner(key)
    runner(**inputs)
    start = time.perf_counter()
    for _ in range(repeats):
        runner(**inputs)
    return (time.perf_counter() - start) / repeats * 1000.0


def _psnr(a, b) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)


def report_path(export_dir: str) -> str:
    return os.path.join(export_dir, SUBDIR, REPORT)


def read_report(export_dir: str) -> dict:
    """The tflite_report.json of `export_dir`, or {} when there is none."""
    path = report_path(export_dir)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def write_report(export_dir: str, report: dict) -> dict:
    """Writes EXPORT_DIR/tflite/tflite_report.json atomically: the one writer of that file."""
    files.atomic_write_text(report_path(export_dir), json.dumps(report, indent=2) + "\n")
    return report


def export_tflite(
    model, export_dir: str, test_images: np.ndarray, quantizations=QUANTIZATIONS, latency_batch: int = 1
) -> dict:
    """Converts the encoder and decoder of `model` (a `VQVAE`, or a `VQVAE2`: its decoder takes
    ``codes_top`` and ``codes_bottom``, its encoder gives both) and checks them against it on
    `test_images` (float32 [N,H,W,C] in [0,1], real data). Returns the report (also written)."""
    H, W, C = model.image_shape
    images_spec = tf.TensorSpec([None, H, W, C], tf.float32, name="images")
    grids = model.code_grids
    codes_specs = [tf.TensorSpec([None, *shape], tf.int32, name=name) for name, shape in grids.items()]
    test_images = np.asarray(test_images, np.float32)
    ref_codes = {name: c.numpy() for name, c in model.encode_grids(test_images).items()}
    ref_images = model.decode_grids(ref_codes).numpy()
    out_dir = os.path.join(export_dir, SUBDIR)
    os.makedirs(out_dir, exist_ok=True)
    report = {"num_test_images": int(len(test_images)), "latency_batch": latency_batch, "models": {}}

    def representative(kind):
        def gen():
            for i in range(0, min(len(test_images), 200), 10):
                if kind == "decoder":
                    yield {name: c[i : i + 10] for name, c in ref_codes.items()}
                else:
                    yield {"images": test_images[i : i + 10]}

        return gen

    with tempfile.TemporaryDirectory() as tmp:
        dec_dir, enc_dir = os.path.join(tmp, "decoder"), os.path.join(tmp, "encoder")
        # The converter leaves the quantiser's variables as resource variables (VAR_HANDLE), which
        # int8 calibration and plain interpreters cannot use; the graphs take a constant copy.
        codebooks = model.frozen_codebooks()
        _save_signature(
            model,
            lambda *codes: {"images": model.decode_with(dict(zip(grids, codes)), codebooks)},
            codes_specs,
            "decode",
            dec_dir,
        )
        _save_signature(model, lambda images: model.encode_with(images, codebooks), [images_spec], "encode", enc_dir)
        for q in quantizations:
            dec = convert(dec_dir, "decode", q, representative("decoder"))
            enc = convert(enc_dir, "encode", q, representative("encoder"))
            for name, data in ((f"decoder_{q}.tflite", dec), (f"encoder_{q}.tflite", enc)):
                flex = sorted(op for op in op_names(data) if op.startswith("Flex") or op == "CUSTOM")
                if flex:
                    raise ConversionError(f"{name} needs non-builtin ops {flex}; LiteRT cannot run them.")
                files.atomic_write_bytes(os.path.join(out_dir, name), data)
            got_images = run_signature(dec, "decode", **ref_codes)["images"]
            got_codes = run_signature(enc, "encode", images=test_images)
            agreement = np.mean(np.concatenate([(got_codes[n] == c).reshape(-1) for n, c in ref_codes.items()]))
            err = float(np.abs(got_images - ref_images).max())
            report["models"][q] = {
                "decoder_file": f"decoder_{q}.tflite",
                "encoder_file": f"encoder_{q}.tflite",
                "decoder_bytes": len(dec),
                "encoder_bytes": len(enc),
                "decoder_max_abs_error": err,
                "decoder_psnr_vs_float_db": _psnr(got_images, ref_images),
                "encoder_code_agreement": float(agreement),
                "decoder_latency_ms": _latency_ms(
                    dec, "decode", {name: c[:latency_batch] for name, c in ref_codes.items()}
                ),
                "encoder_latency_ms": _latency_ms(enc, "encode", {"images": test_images[:latency_batch]}),
                "bar_max_abs_error": MAX_ABS_ERROR.get(q),
                "meets_bar": (err <= MAX_ABS_ERROR[q]) if q in MAX_ABS_ERROR else None,
            }
    return write_report(export_dir, report)


def export_generator(
    prior, model, export_dir: str, quantizations=("float32", "float16", "dynamic_range"), seed: int = 0
) -> dict:
    """``E/tflite/generator_<q>.tflite``: prior sampling + decoding in one builtin-only model.

    Signature ``generate``: ``uniforms`` float32 [N, *prior.generator_uniforms_shape()] in [0, 1)
    (the random numbers, passed in because random ops are not builtins: [N, h*w*Q] for PixelCNN and
    the transformer, one per position, Q the codes per position; [N, steps, 2, h*w*Q] for MaskGIT,
    each step's picks and choice noise, the step count read from the input), ``temperature``
    float32 [] and, for a conditional prior, ``labels`` int32 [N] -> ``codes`` int32
    [N, *codes_shape], ``images`` float32 [N,H,W,C]. Checked against the same sampler in
    TensorFlow; a quantization the converter refuses is recorded, not fatal. Returns the report
    entries (also merged into tflite_report.json)."""
    codebooks = model.frozen_codebooks()
    conditional = bool(prior.num_classes)
    shape = prior.generator_uniforms_shape()  # MaskGIT's steps: None, any count
    checked_steps = 8

    def generate(uniforms, temperature, labels=None):
        codes = model.from_prior_grid(prior.sample_from_uniforms_graph(uniforms, temperature, labels))
        return {"codes": codes, "images": model.decode_with({"codes": codes}, codebooks)}

    specs = [
        tf.TensorSpec([None, *shape], tf.float32, name="uniforms"),
        tf.TensorSpec([], tf.float32, name="temperature"),
    ]
    fn = generate
    if conditional:
        specs.append(tf.TensorSpec([None], tf.int32, name="labels"))
    else:
        fn = lambda uniforms, temperature: generate(uniforms, temperature)  # noqa: E731
    n = 8
    inputs = {
        "uniforms": np.random.default_rng(seed)
        .uniform(size=(n, *prior.generator_uniforms_shape(checked_steps)))
        .astype(np.float32),
        "temperature": np.float32(1.0),
    }
    if conditional:
        inputs["labels"] = (np.arange(n) % prior.num_classes).astype(np.int32)
    reference = fn(**{k: tf.constant(v) for k, v in inputs.items()})
    out_dir = os.path.join(export_dir, SUBDIR)
    os.makedirs(out_dir, exist_ok=True)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        archive = keras.export.ExportArchive()
        archive.track(prior)
        archive.track(model)
        archive.add_endpoint("generate", fn, input_signature=specs)
        archive.write_out(tmp, verbose=False)
        for q in quantizations:
            try:
                data = convert(tmp, "generate", q)
            except ConversionError as e:
                results[q] = {"converted": False, "reason": str(e)[:500]}
                continue
            name = f"generator_{q}.tflite"
            files.atomic_write_bytes(os.path.join(out_dir, name), data)
            got = run_signature(data, "generate", **inputs)
            one = {k: v[:1] for k, v in inputs.items() if k != "temperature"}
            one["temperature"] = inputs["temperature"]
            results[q] = {
                "converted": True,
                "file": name,
                "bytes": len(data),
                "code_agreement_vs_tensorflow": float(np.mean(got["codes"] == reference["codes"].numpy())),
                "images_max_abs_error_vs_tensorflow": float(np.abs(got["images"] - reference["images"].numpy()).max()),
                "latency_ms_one_sample": _latency_ms(data, "generate", one, repeats=5),
            }
    write_report(export_dir, {**read_report(export_dir), "generator": results})
    return results
