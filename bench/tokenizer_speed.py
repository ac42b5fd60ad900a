r"""Converted tokenizers against diffusers in PyTorch: encode and decode latency per batch, peak memory.

    python -m bench.tokenizer_speed --torch_python=/tmp/torchvenv/bin/python          # both models
    python -m bench.tokenizer_speed --models=amused256 --batches=1 --rounds=1         # a first look

The real architectures at their real sizes with random weights (configs from their published
config.json: aMUSEd-256's VQ-GAN, scripts/convert_amused.py; the LDM VQ-f4 first stage of 256x256
images). The torch venv (bench/requirements-torch.txt) makes the diffusers model once and saves it;
`export.convert_checkpoint`'s library converts that folder, and the SavedModel and TFLite files are
exported from the converted preset. Then each variant runs in its own process (so its peak RSS is
its own), the variants' order rotating each round, all on the same 2 threads:
  torch        diffusers VQModel, eager, torch.inference_mode: encode = encoder + quant_conv +
               nearest code; decode = codebook lookup + post_quant_conv + decoder
  savedmodel   our SavedModel's `encode` / `decode` signatures (what TF Serving runs)
  xla          the same functions as tf.function(jit_compile=True) (TF Serving needs
               --xla_cpu_compilation_enabled for that)
  tflite_f32, tflite_f16   our TFLite encoder and decoder in LiteRT's interpreter (XNNPACK)
Each figure is the median of `--repeats` timed calls after one untimed call, per round; the JSON
keeps every round's figure. Writes bench/results/tokenizer_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "bench", "results", "tokenizer_speed.json")
CONFIGS = {
    "amused256": dict(
        block_out_channels=[128, 256, 256, 512, 768],
        down_block_types=["DownEncoderBlock2D"] * 5,
        up_block_types=["UpDecoderBlock2D"] * 5,
        latent_channels=64,
        layers_per_block=2,
        norm_num_groups=32,
        num_vq_embeddings=8192,
        sample_size=256,
        mid_block_add_attention=False,
        lookup_from_codebook=True,
    ),
    "ldm_f4": dict(  # CompVis' vq-f4: ch 128, ch_mult 1,2,4, 2 res blocks, no block attention, z 3, K 8192
        block_out_channels=[128, 256, 512],
        down_block_types=["DownEncoderBlock2D"] * 3,
        up_block_types=["UpDecoderBlock2D"] * 3,
        latent_channels=3,
        layers_per_block=2,
        norm_num_groups=32,
        num_vq_embeddings=8192,
        sample_size=256,
        lookup_from_codebook=True,  # (how diffusers' decode takes codes; the network is the same)
    ),
}
VARIANTS = ("torch", "savedmodel", "xla", "tflite_f32", "tflite_f16")
THREADS = 2


def _peak_mb() -> float:
    """This process's peak resident memory: /proc's VmHWM (getrusage's ru_maxrss survives exec on
    Linux, so a worker would report its parent's peak)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _time(fn, repeats: int) -> float:
    """Median ms of `repeats` calls after one untimed call (each `fn` is timed at once, in its loop)."""
    fn()  # (untimed: compilation, allocation)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000.0)
    return statistics.median(times)


def _inputs(size: int, batch: int, latent: int, k: int):
    rng = np.random.default_rng(batch)
    images = rng.uniform(size=(batch, size, size, 3)).astype(np.float32)
    codes = rng.integers(0, k, size=(batch, latent, latent)).astype(np.int32)
    return images, codes


# ------------------------------------------------------------------ workers (one process each)


def worker_make(args) -> dict:
    """(torch venv) The diffusers model of `args.model` with its random initialisation, saved."""
    import torch
    from diffusers import VQModel

    torch.manual_seed(0)
    VQModel(**CONFIGS[args.model]).save_pretrained(args.folder)
    return {}


def worker_torch(args) -> dict:
    import torch
    from diffusers import VQModel

    torch.set_num_threads(THREADS)
    model = VQModel.from_pretrained(args.folder).eval()
    out = {}
    for b in args.batches:
        images, codes = _inputs(args.size, b, args.latent, args.k)
        x = torch.from_numpy(images).permute(0, 3, 1, 2) * 2 - 1
        c = torch.from_numpy(codes).long()
        c_dim = model.config.vq_embed_dim or model.config.latent_channels

        def encode():
            with torch.inference_mode():
                return model.quantize(model.encode(x).latents)[2][2]

        def decode():
            with torch.inference_mode():
                shape = (b, args.latent, args.latent, c_dim)
                return model.decode(c.reshape(-1), force_not_quantize=True, shape=shape).sample

        if not model.config.lookup_from_codebook:
            raise SystemExit("bench configs decode codes with lookup_from_codebook=True")
        out[f"encode_b{b}"], out[f"decode_b{b}"] = _time(encode, args.repeats), _time(decode, args.repeats)
    return out


def _tf_threads():
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(THREADS)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    return tf


def worker_savedmodel(args) -> dict:
    tf = _tf_threads()
    served = tf.saved_model.load(args.savedmodel)
    out = {}
    for b in args.batches:
        images, codes = _inputs(args.size, b, args.latent, args.k)
        images, codes = tf.constant(images), tf.constant(codes)
        out[f"encode_b{b}"] = _time(lambda: served.signatures["encode"](images=images)["codes"].numpy(), args.repeats)
        out[f"decode_b{b}"] = _time(lambda: served.signatures["decode"](codes=codes)["images"].numpy(), args.repeats)
    return out


def worker_xla(args) -> dict:
    tf = _tf_threads()
    sys.path.insert(0, REPO)
    from vqvae_tf import VQVAE

    model = VQVAE.from_preset(args.preset)
    encode = tf.function(model.encode, jit_compile=True)
    decode = tf.function(model.decode, jit_compile=True)
    out = {}
    for b in args.batches:
        images, codes = _inputs(args.size, b, args.latent, args.k)
        images, codes = tf.constant(images), tf.constant(codes)
        out[f"encode_b{b}"] = _time(lambda: encode(images).numpy(), args.repeats)
        out[f"decode_b{b}"] = _time(lambda: decode(codes).numpy(), args.repeats)
    return out


def worker_tflite(args) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    q = "float32" if args.variant == "tflite_f32" else "float16"
    out = {}
    for kind, key in (("encoder", "encode"), ("decoder", "decode")):
        path = os.path.join(args.tflite, f"{kind}_{q}.tflite")
        interpreter = Interpreter(model_path=path, num_threads=THREADS)
        runner = interpreter.get_signature_runner(key)
        for b in args.batches:
            images, codes = _inputs(args.size, b, args.latent, args.k)
            feed = {"images": images} if kind == "encoder" else {"codes": codes}
            out[f"{key}_b{b}"] = _time(lambda: runner(**feed), args.repeats)
    return out


WORKERS = {"make": worker_make, "torch": worker_torch, "savedmodel": worker_savedmodel, "xla": worker_xla}
WORKERS |= {"tflite_f32": worker_tflite, "tflite_f16": worker_tflite}


# ------------------------------------------------------------------ the orchestrator


def _spawn(python: str, args: argparse.Namespace, variant: str, **extra) -> dict:
    argv = [
        python,
        "-m",
        "bench.tokenizer_speed",
        f"--worker={variant}",
        f"--payload={json.dumps({**vars(args), **extra})}",
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "OMP_NUM_THREADS": str(THREADS), "PYTHONPATH": REPO}
    res = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"{variant} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def prepare(model: str, torch_python: str, root: str) -> dict:
    """The diffusers folder, the converted preset, its SavedModel and TFLite files under `root`."""
    sys.path.insert(0, REPO)
    from vqvae_tf.convert import convert
    from vqvae_tf.serving import export_savedmodel_lib, tflite

    folder = os.path.join(root, "diffusers")
    _spawn(torch_python, argparse.Namespace(model=model, folder=folder), "make")
    preset = os.path.join(root, "preset")
    convert(folder, preset)
    paths = export_savedmodel_lib.export_savedmodel_stage(None, os.path.join(root, "serving"), preset=preset)
    from vqvae_tf import VQVAE

    vqvae = VQVAE.from_preset(preset)
    images = np.random.default_rng(0).uniform(size=(4, *vqvae.image_shape)).astype(np.float32)
    report = tflite.export_tflite(vqvae, os.path.join(root, "serving"), images, ["float32", "float16"])
    return {
        "folder": folder,
        "preset": preset,
        "savedmodel": paths["vqvae"],
        "tflite": os.path.join(root, "serving", tflite.SUBDIR),
        "latent": int(vqvae.latent_shape[0]),
        "k": int(vqvae.num_embeddings),
        "size": int(vqvae.image_shape[0]),
        "parameters": int(vqvae.count_params()),
        "tflite_parity": {
            q: {k: r[k] for k in ("decoder_max_abs_error", "encoder_code_agreement")}
            for q, r in report["models"].items()
        },
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", default=None)
    parser.add_argument("--payload", default=None)
    parser.add_argument("--models", default=",".join(CONFIGS))
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--torch_python", default="/tmp/torchvenv/bin/python")
    args = parser.parse_args()
    if args.worker:
        payload = argparse.Namespace(**json.loads(args.payload))
        result = WORKERS[args.worker](payload)
        print(json.dumps({**result, "peak_rss_mb": _peak_mb()}))
        return
    batches = [int(b) for b in args.batches.split(",")]
    results = {"machine": platform.processor() or platform.machine(), "threads": THREADS, "models": {}}
    for name in args.models.split(","):
        with tempfile.TemporaryDirectory() as root:
            t = time.time()
            info = prepare(name, args.torch_python, root)
            print(f"{name}: {info['parameters']:,} parameters, prepared in {time.time() - t:.0f} s", flush=True)
            rounds = []
            for r in range(args.rounds):
                order = VARIANTS[r % len(VARIANTS) :] + VARIANTS[: r % len(VARIANTS)]
                figures = {}
                for variant in order:
                    python = args.torch_python if variant == "torch" else sys.executable
                    figures[variant] = _spawn(
                        python,
                        argparse.Namespace(batches=batches, repeats=args.repeats, variant=variant, **info),
                        variant,
                    )
                    print(f"  round {r + 1} {variant}: {figures[variant]}", flush=True)
                rounds.append(figures)
            summary = {v: {k: statistics.median(rd[v][k] for rd in rounds) for k in rounds[0][v]} for v in VARIANTS}
            ratios = {
                v: {k: summary["torch"][k] / summary[v][k] for k in summary[v] if k != "peak_rss_mb"} for v in VARIANTS
            }
            results["models"][name] = {
                "config": CONFIGS[name],
                **{k: info[k] for k in ("parameters", "size", "latent", "tflite_parity")},
                "median_ms": summary,
                "speedup_vs_torch": ratios,
                "rounds": rounds,
            }
            print(json.dumps({"median_ms": summary, "speedup_vs_torch": ratios}, indent=1), flush=True)
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as f:
        json.dump(results, f, indent=1)
    print(f"Wrote {RESULTS}")


if __name__ == "__main__":
    main()
