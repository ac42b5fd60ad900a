r"""The colour presets on held-out clip art (BENCHMARKS section 12): reconstruction quality, codes,
the prior, and class-conditional samples judged by an independent classifier.

    python -m bench.colour_presets --out=/work/bench_runs/colour     # the shipped clipart_64 and clipart_64_fsq
    python -m bench.colour_presets --runs=mine=runs/clipart --out=...  # a pipeline workdir
    # then rFID in the PyTorch venv (bench/requirements-torch.txt):
    python -m bench.rfid --runs=/work/bench_runs/colour

For the autoencoder, on the whole held-out split (778 images, 10% by path hash): PSNR, SSIM, LPIPS
(VGG), code usage and perplexity, code bits per image, and <out>/<name>/reconstructions.npz for
bench.rfid. For the prior: its test masked-token NLL or bits/code (from the run's metrics). For the
samples, bench.sample_quality's method on clip art: a small CNN (nothing shared with the library)
is trained once on the real training split's 22 categories; it labels the real held-out images,
each run's reconstructions, and one class-conditional sample per held-out image conditioned on that image's
category (the same label mix, so the three accuracies compare directly). Pictures: held-out images
over their reconstructions, and `--columns` samples per category (one row each).
"""

from __future__ import annotations

import json
import os
import time

import keras
import numpy as np
from absl import app, flags

from bench.common import machine, write_json
from vqvae_tf import data
from vqvae_tf.models import presets
from vqvae_tf.models.priors.sampling import sample_grids
from vqvae_tf.training import models_lib, train_vqvae_lib
from vqvae_tf.utils import images

flags.DEFINE_list(
    "runs", ["clipart_64", "clipart_64_fsq"], "Presets (names or directories), or NAME=WORKDIR for pipeline workdirs."
)
flags.DEFINE_string("out", "/work/bench_runs/colour", "Results directory (results.json, pictures, npz).")
flags.DEFINE_integer("classifier_epochs", 12, "Epochs of the independent classifier.")
flags.DEFINE_integer("sample_rounds", 2, "Class-conditional samples per held-out image (seeds 0..N-1).")
flags.DEFINE_integer("columns", 8, "Samples per category in the picture.")
flags.DEFINE_integer("steps", 8, "MaskGIT decoding steps (ignored by the other priors).")
FLAGS = flags.FLAGS

AE_KEYS = ("test_psnr", "test_ssim", "test_lpips", "codebook_usage", "perplexity", "code_bits_per_image")


def classifier(x, y, xt, yt, num_classes: int, epochs: int, seed: int = 0):
    """An independent clip-art classifier (a small CNN with flips, on 2x-downsampled images):
    (model, held-out accuracy)."""
    keras.utils.set_random_seed(seed)
    # At half resolution (the judge's cost on 2 CPU cores; categories are told apart at 32 px).
    layers = [keras.Input(x.shape[1:]), keras.layers.AveragePooling2D(2), keras.layers.RandomFlip("horizontal")]
    for width in (32, 64, 128):
        layers += [
            keras.layers.Conv2D(width, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(width, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
        ]
    layers += [keras.layers.GlobalAveragePooling2D(), keras.layers.Dropout(0.3), keras.layers.Dense(num_classes)]
    model = keras.Sequential(layers)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0)
    return model, accuracy(model, xt, yt)


def accuracy(model, x, y) -> float:
    return float(np.mean(np.argmax(model.predict(x, batch_size=256, verbose=0), -1) == y))


def arrays(source, split):
    x, y = zip(*((a, b) for a, b in source.load(split).batch(1000).as_numpy_iterator()))
    return np.concatenate(x), np.concatenate(y)


def read_metrics(workdir: str, stage: str) -> dict:
    path = os.path.join(workdir, stage, "metrics.json")
    return json.load(open(path)) if os.path.exists(path) else {}


def decode_all(vqvae, codes, batch=200):
    return np.concatenate([vqvae.decode(codes[i : i + batch]).numpy() for i in range(0, len(codes), batch)])


def load_run(spec: str):
    """A run to measure: a preset name or directory, or ``name=WORKDIR`` for a pipeline workdir."""
    name, _, workdir = spec.partition("=") if "=" in spec else (None, None, None)
    preset = None if workdir else spec
    name = name or os.path.basename(os.path.normpath(spec))
    vqvae, prior = models_lib.load_vqvae(workdir, preset), models_lib.load_prior(workdir, preset)
    if preset:
        vq_meta, prior_meta = (presets.read_metadata(preset, kind) for kind in ("vqvae", "prior"))
    else:
        vq_meta, prior_meta = ({"test_metrics": read_metrics(workdir, kind)} for kind in ("vqvae", "prior"))
        vq_meta["steps"], prior_meta["steps"] = (
            vq_meta["test_metrics"]["steps"],
            prior_meta["test_metrics"].get("steps"),
        )
    return name, vqvae, prior, models_lib.data_source(workdir, preset), vq_meta, prior_meta


def measure(name, vqvae, prior, source, vq_meta, prior_meta, clf, xt, yt) -> dict:
    run_dir = os.path.join(FLAGS.out, name)
    os.makedirs(run_dir, exist_ok=True)
    start = time.time()
    ae = train_vqvae_lib.evaluate(vqvae, data.batched(source.load("test"), 200, training=False))
    recon = np.clip(np.concatenate([vqvae(xt[i : i + 200]).numpy() for i in range(0, len(xt), 200)]), 0, 1)
    to_uint8 = lambda a: np.round(a * 255).astype(np.uint8)  # noqa: E731
    np.savez_compressed(os.path.join(run_dir, "reconstructions.npz"), real=to_uint8(xt), reconstructed=to_uint8(recon))
    images.write_png(os.path.join(run_dir, "reconstructions.png"), images.comparison_grid(xt[:16], recon[:16], 16))
    recon_acc = accuracy(clf, recon, yt)
    options = {"steps": FLAGS.steps} if type(prior).__name__ == "MaskGITPrior" else {}
    sample_acc, sample_seconds = [], 0.0
    for seed in range(FLAGS.sample_rounds):
        t0 = time.time()
        codes = np.concatenate(
            [
                sample_grids(prior, len(yt[i : i + 250]), 1.0, seed * 10_000 + i, yt[i : i + 250], **options)["codes"]
                for i in range(0, len(yt), 250)
            ]
        )
        sample_seconds += time.time() - t0
        sample_acc.append(accuracy(clf, np.clip(decode_all(vqvae, codes), 0, 1), yt))
    per_class = np.repeat(np.arange(prior.num_classes, dtype=np.int32), FLAGS.columns)
    grid_codes = sample_grids(prior, len(per_class), 1.0, 123, per_class, **options)["codes"]
    samples = np.clip(decode_all(vqvae, grid_codes.numpy()), 0, 1)
    images.write_png(os.path.join(run_dir, "samples_by_category.png"), images.grid(samples, FLAGS.columns, scale=1))
    prior_test = prior_meta.get("test_metrics", {})
    return {
        "test_examples": int(len(yt)),
        **{k: ae.get(k) for k in AE_KEYS},
        "prior": type(prior).__name__,
        **{k: prior_test[k] for k in ("test_masked_bits_per_code", "test_bits_per_code") if k in prior_test},
        "classifier_accuracy_reconstructions": recon_acc,
        "conditional_sample_accuracy": float(np.mean(sample_acc)),
        "conditional_sample_accuracy_per_seed": sample_acc,
        "samples_vs_reconstructions": float(np.mean(sample_acc) / recon_acc),
        "sampling_seconds_per_image": sample_seconds / (len(yt) * FLAGS.sample_rounds),
        "sample_options": options,
        "vqvae_steps": vq_meta.get("steps"),
        "prior_steps": prior_meta.get("steps"),
        "parameters": {"vqvae": int(vqvae.count_params()), "prior": int(prior.count_params())},
        "seconds": time.time() - start,
    }


def main(argv):
    del argv
    runs = [load_run(spec) for spec in FLAGS.runs]
    sources = {json.dumps(r[3].to_dict(), sort_keys=True) for r in runs}
    if len(sources) != 1:
        raise app.UsageError(f"The runs were trained on different data: {sorted(sources)}.")
    source = runs[0][3]
    class_names = list(source.info().class_names)
    xt, yt = arrays(source, "test")
    x, y = arrays(source, "train")
    t0 = time.time()
    clf, real_acc = classifier(x, y, xt, yt, len(class_names), FLAGS.classifier_epochs)
    path = os.path.join(FLAGS.out, "results.json")
    results = json.load(open(path)) if os.path.exists(path) else {}
    results["classifier"] = {
        "machine": machine(),
        "data": source.describe(),
        "class_names": class_names,
        "epochs": FLAGS.classifier_epochs,
        "accuracy_real_test": real_acc,
        "train_seconds": time.time() - t0,
    }
    for name, *rest in runs:
        results[name] = measure(name, *rest, clf, xt, yt)
        print(json.dumps({name: results[name]}, indent=1))
        write_json(path, results)


if __name__ == "__main__":
    app.run(main)
