r"""The VQGAN recipe's evidence: one network, one budget, one quantizer, three losses.

On openclipart-png at 64x64 (apt-get install openclipart-png; an image folder, alpha over white),
the `vqgan_64` network (EMA quantizer, K=256, 16x16 codes) is trained with
  mse     the model's own loss (MSE / data variance) only,
  lpips   + LPIPS (weight 1, on `--perceptual_net`: VGG, as the config and taming's),
  vqgan   the full VQGAN recipe: L1 + LPIPS + PatchGAN hinge loss with the adaptive weight,
for the same steps, batch and precision each (`--mixed_precision`: bf16 by default, 2.2x faster
with LPIPS-VGG on an AMX Xeon). Each run's evaluation gives PSNR, SSIM, LPIPS (VGG), code usage
and perplexity on the held-out split; training images/s is measured in the run. The reconstructions
of the held-out images are saved (uint8, <run>/reconstructions.npz) for rFID, which needs PyTorch
(bench/rfid.py, its own venv), and a picture of the three side by side is written.

    python -m bench.perceptual --out=runs/bench_perceptual --steps=3000 --disc_start=1000 [--variants=mse,lpips,vqgan]
    /tmp/torch/bin/python -m bench.rfid --runs=runs/bench_perceptual        # adds rfid.json
    python -m bench.perceptual --out=runs/bench_perceptual --report         # the table, with rFID
"""

from __future__ import annotations

import json
import os

import numpy as np
from absl import app, flags

from bench.common import machine, write_json
from vqvae_tf import data, get_config
from vqvae_tf.data import DataSource
from vqvae_tf.training import train_vqvae_lib
from vqvae_tf.training.options import RunOptions
from vqvae_tf.utils import images

VARIANTS = {
    "mse": dict(reconstruction_loss="mse", perceptual_weight=0.0, adversarial_weight=0.0),
    "lpips": dict(reconstruction_loss="mse", perceptual_weight=1.0, adversarial_weight=0.0),
    "lpips_alex": dict(reconstruction_loss="mse", perceptual_weight=1.0, perceptual_net="alex", adversarial_weight=0.0),
    "vqgan": dict(reconstruction_loss="l1", perceptual_weight=1.0, adversarial_weight=0.8),
}
KEYS = ("test_psnr", "test_ssim", "test_lpips", "codebook_usage", "perplexity", "images_per_second", "steps")

flags.DEFINE_string("out", "runs/bench_perceptual", "Directory of the runs and results.")
flags.DEFINE_string("data_dir", "/usr/share/openclipart/png", "The image folder.")
flags.DEFINE_integer("steps", 3000, "Training steps of each run.")
flags.DEFINE_integer("batch_size", 32, "Batch size of each run.")
flags.DEFINE_integer("disc_start", 1000, "Steps before the discriminator acts (vqgan).")
flags.DEFINE_list("variants", ["mse", "lpips", "vqgan"], f"Which runs, of {', '.join(VARIANTS)}.")
flags.DEFINE_enum("perceptual_net", "vgg", ["alex", "vgg"], "LPIPS's network in training (lpips, vqgan).")
flags.DEFINE_enum("mixed_precision", "mixed_bfloat16", ["none", "auto", "mixed_bfloat16"], "Every run's precision.")
flags.DEFINE_string("preset", None, "Only evaluate this shipped preset on its full test split (SSIM, LPIPS, ...).")
flags.DEFINE_bool("report", False, "Only print the table of finished runs (with rfid.json when present).")
FLAGS = flags.FLAGS


def source() -> DataSource:
    # Two of its 8,121 PNGs are corrupt (stop signs); they are skipped, with a note.
    return DataSource("image_folder", FLAGS.data_dir, image_size=64, channels=3, skip_corrupt_images=True)


def run_variant(name: str) -> dict:
    config = get_config("vqgan_64")
    config.steps, config.batch_size, config.disc_start = FLAGS.steps, FLAGS.batch_size, FLAGS.disc_start
    config.perceptual_net = FLAGS.perceptual_net
    for k, v in VARIANTS[name].items():
        setattr(config, k, v)
    config.validate()
    workdir = os.path.join(FLAGS.out, name)
    options = RunOptions(
        workdir=workdir, data=source(), log_every=250, checkpoint_every=500, mixed_precision=FLAGS.mixed_precision
    )
    metrics = train_vqvae_lib.train_and_evaluate(config, options)
    model = train_vqvae_lib.load_trained_model(workdir)
    real, recon = [], []
    for x, _ in data.batched(source().load("test"), 200, training=False):
        real.append(x.numpy())
        recon.append(model(x).numpy())
    to_uint8 = lambda a: np.round(np.concatenate(a) * 255).astype(np.uint8)  # noqa: E731
    np.savez_compressed(
        os.path.join(workdir, "reconstructions.npz"), real=to_uint8(real), reconstructed=to_uint8(recon)
    )
    return {k: metrics.get(k) for k in KEYS}


def picture(names, path: str, count: int = 8) -> None:
    """Rows: the real held-out images, then each run's reconstructions of them."""
    rows = []
    for i, name in enumerate(names):
        arrays = np.load(os.path.join(FLAGS.out, name, "reconstructions.npz"))
        if i == 0:
            rows.append(arrays["real"][:count])
        rows.append(arrays["reconstructed"][:count])
    grid = np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)
    images.write_png(path, np.kron(grid, np.ones((2, 2, 1), np.uint8)))  # 2x: 64 px tiles are small


def report() -> dict:
    results = json.load(open(os.path.join(FLAGS.out, "results.json")))
    rfid_path = os.path.join(FLAGS.out, "rfid.json")
    rfid = json.load(open(rfid_path)) if os.path.exists(rfid_path) else {}
    header = "| run | PSNR dB | SSIM | LPIPS (VGG) | rFID | code usage | perplexity | train images/s |"
    lines = [header, "|---|---|---|---|---|---|---|---|"]
    for name, m in results["runs"].items():
        lines.append(
            f"| {name} | {m['test_psnr']:.2f} | {m['test_ssim']:.4f} | {m['test_lpips']:.4f} | "
            f"{rfid.get(name, float('nan')):.2f} | {m['codebook_usage']:.3f} | {m['perplexity']:.1f} | "
            f"{m['images_per_second']:.0f} |"
        )
    print("\n".join(lines))
    base = results["runs"].get("mse")
    for name, m in results["runs"].items():
        if base and name != "mse":
            lpips_drop = 1 - m["test_lpips"] / base["test_lpips"]
            line = f"{name} vs mse: LPIPS {-lpips_drop:+.1%}, PSNR {m['test_psnr'] - base['test_psnr']:+.2f} dB"
            if name in rfid and "mse" in rfid:
                line += f", rFID {rfid[name] / rfid['mse'] - 1:+.1%}"
            print(line)
    return results


def evaluate_preset(name: str) -> dict:
    """The shipped preset's evaluation on its data's full test split, as a training run reports it."""
    from vqvae_tf import VQVAE
    from vqvae_tf.models import presets

    model = VQVAE.from_preset(name)
    meta = presets.read_metadata(name, "vqvae")
    test = data.batched(DataSource.from_dict(meta["data"]).load("test"), 500, training=False)
    metrics = train_vqvae_lib.evaluate(model, test)
    keys = ("test_psnr", "test_ssim", "test_lpips", "test_normalized_mse", "codebook_usage", "test_examples")
    return {"preset": name, **{k: metrics[k] for k in keys}}


def main(argv):
    del argv
    if FLAGS.preset:
        write_json(None, {"machine": machine(), **evaluate_preset(FLAGS.preset)})
        return
    if FLAGS.report:
        report()
        return
    os.makedirs(FLAGS.out, exist_ok=True)
    path = os.path.join(FLAGS.out, "results.json")
    results = json.load(open(path)) if os.path.exists(path) else {"runs": {}}
    results.update(
        machine=machine(),
        steps=FLAGS.steps,
        batch_size=FLAGS.batch_size,
        disc_start=FLAGS.disc_start,
        perceptual_net=FLAGS.perceptual_net,
        mixed_precision=FLAGS.mixed_precision,
        data=source().describe(),
        network="vqgan_64 (128 hidden, 64 residual hidden, 2 residual layers, downsample 4, EMA K=256 D=64)",
    )
    for name in FLAGS.variants:
        run = run_variant(name)
        if os.path.exists(path):  # another process may have added runs meanwhile
            results["runs"] = {**json.load(open(path))["runs"], **results["runs"]}
        results["runs"][name] = run
        write_json(path, results)
    picture(list(results["runs"]), os.path.join(FLAGS.out, "reconstructions.png"))


if __name__ == "__main__":
    app.run(main)
