r"""VQ-VAE-2 against VQ-VAE on real data, at one resolution and a comparable code budget.

Fashion-MNIST resized to 56x56 (training budget: --steps x 128 images per autoencoder, --prior_steps
x 64 code grids per prior): VQ-VAE (the fashion_mnist network, 14x14 codes, K=512: 1764 code
bits per image) against VQ-VAE-2 (the same widths, 7x7 top + 14x14 bottom codes, K=128: 1715
bits). Each gets a class-conditional prior of the same width (a 5x5 gated PixelCNN per grid, sized
to see its whole grid). Reported: normalized MSE, the bits/dim bound, the prior's bits per code,
class-conditional sample accuracy under an independent classifier (bench.sample_quality's CNN on
28x28 images; samples are averaged 2x2 down to 28x28), and sampling time per image (codes and
decoding, one graph, after a warm-up). Also a VQ-VAE-2 run on an image folder (real Fashion-MNIST
images written as RGB PNGs, class folders, no split folders).

    python -m bench.vqvae2 --root=/tmp/bench_vqvae2 --output=/tmp/vqvae2.json
    python -m bench.vqvae2 --root=/tmp/b --steps=200 --prior_steps=100 --quick   # a smoke run

Each variant resumes (its workdir under --root) and skips stages that are done.
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np
import tensorflow as tf
from absl import app, flags

from bench.common import classifier, machine, vqvae_and_codes, write_json
from vqvae_tf import configs, data, sample_grids
from vqvae_tf.data import DataSource
from vqvae_tf.training import train_prior_lib, train_vqvae_lib
from vqvae_tf.training.options import RunOptions
from vqvae_tf.training.workdir import Workdir

flags.DEFINE_string("root", "/tmp/bench_vqvae2", "Directory of the runs.")
flags.DEFINE_integer("steps", 3000, "Autoencoder training steps (batch 128).")
flags.DEFINE_integer("prior_steps", 1000, "Prior training steps (batch 64).")
flags.DEFINE_integer("folder_images", 6000, "Images in the image-folder run (a tenth held out).")
flags.DEFINE_integer("samples_per_class", 50, "Class-conditional samples per class.")
flags.DEFINE_list("variants", ["vqvae", "vqvae2", "vqvae2_folder"], "Which runs.")
flags.DEFINE_bool("quick", False, "Fewer classifier epochs.")
flags.DEFINE_string("output", None, "JSON file for the results.")
FLAGS = flags.FLAGS

SIZE = 56
NETWORK = dict(num_hiddens=64, num_residual_hiddens=32, num_residual_layers=2, embedding_dim=32)
VARIANTS = {
    "vqvae": dict(model="vqvae", num_embeddings=512),
    "vqvae2": dict(model="vqvae2", num_embeddings=128),
    # Evidence that a folder of the user's own images runs end to end: a third of the budget.
    "vqvae2_folder": dict(model="vqvae2", num_embeddings=128, folder=True),
}
VQ_KEYS = (*train_vqvae_lib.QUALITY_KEYS, "code_bits_per_image", "images_per_second")
PRIOR_KEYS = (
    "test_bits_per_code",
    "test_bits_per_code_top",
    "test_bits_per_code_bottom",
    "bits_per_dim",
    "bits_per_dim_uniform_prior",
)


def write_folder(root: str, n: int) -> str:
    """The first `n` Fashion-MNIST training images as RGB PNGs in class folders under ``root``."""
    from PIL import Image

    if os.path.isdir(root):
        return root
    x, y = next(iter(data.load("fashion_mnist", "train").take(n).batch(n)))
    tmp = root + ".tmp"
    for i, (image, label) in enumerate(zip(x.numpy(), y.numpy())):
        grey = (image[..., 0] * 255).round().astype(np.uint8)
        rgb = np.stack([grey, grey // 2, 255 - grey], -1)  # a tint per channel: real colour input
        os.makedirs(os.path.join(tmp, f"c{label}"), exist_ok=True)
        Image.fromarray(rgb).save(os.path.join(tmp, f"c{label}", f"{i:05d}.png"))
    os.rename(tmp, root)
    return root


def run_variant(name: str) -> dict:
    spec = dict(VARIANTS[name])
    model, folder = spec.pop("model"), spec.pop("folder", False)
    config = configs.get_config(configs.DEFAULT_CONFIGS[model])
    steps, prior_steps = (FLAGS.steps // 3, FLAGS.prior_steps // 3) if folder else (FLAGS.steps, FLAGS.prior_steps)
    config = dataclasses.replace(
        config, **NETWORK, **spec, steps=steps, batch_size=128, learning_rate=1e-3, dataset="fashion_mnist"
    )
    data_args = dict(image_size=(SIZE, SIZE), channels=1)
    if folder:
        root = write_folder(os.path.join(FLAGS.root, "folder"), FLAGS.folder_images)
        config.dataset = "image_folder"
        data_args = dict(image_size=(SIZE, SIZE), channels=3, data_dir=root)
    options = RunOptions(
        os.path.join(FLAGS.root, name),
        data=DataSource(**data_args),
        log_every=250,
        checkpoint_every=1000,
        num_sample_columns=10,
    )
    w = Workdir(options.workdir)
    start = time.time()
    vq = vqvae_and_codes(config, options)
    prior_config = dataclasses.replace(
        configs.get_prior_config("default"),
        kernel_size=5,
        num_layers=None,
        steps=prior_steps,
        batch_size=64,
        conditional=True,
    )
    if not w.prior.trained_to(prior_steps):
        train_prior_lib.train_prior(prior_config, options)
    prior_metrics = w.prior.read_metrics()
    row = {
        "variant": name,
        "model": model,
        "data": "image folder, RGB PNGs" if folder else "fashion_mnist IDX",
        "num_embeddings": config.num_embeddings,
        **{k: vq.get(k) for k in VQ_KEYS if vq.get(k) is not None},
        **{k: prior_metrics.get(k) for k in PRIOR_KEYS if prior_metrics.get(k) is not None},
        "steps": vq.get("steps"),
        "prior_steps": prior_metrics.get("steps"),
        "train_seconds": round(time.time() - start, 1),
    }
    row.update(sample_figures(options.workdir, folder))
    return row


def sample_figures(workdir: str, folder: bool) -> dict:
    """Class-conditional sample accuracy (grey runs) and sampling time per image."""
    autoencoder = train_vqvae_lib.load_trained_model(workdir)
    prior = train_prior_lib.load_trained_prior(workdir)

    @tf.function
    def decode(grids):
        return autoencoder.decode_grids(autoencoder.from_prior_grids(grids))

    def draw(labels, seed):
        return decode(sample_grids(prior, len(labels), seed=seed, labels=labels))

    labels = np.repeat(np.arange(prior.num_classes, dtype=np.int32), FLAGS.samples_per_class)
    draw(labels[: min(100, len(labels))], 0)  # compile for the measured batch
    t0 = time.time()
    images = np.concatenate([draw(labels[i : i + 100], i).numpy() for i in range(0, len(labels), 100)])
    seconds = time.time() - t0
    one = draw(labels[:1], 1)
    t1 = time.time()
    for s in range(5):
        one = draw(labels[:1], s + 2)
    one_seconds = (time.time() - t1) / 5
    out = {
        "sampling_ms_per_image_batch_100": 1000 * seconds / len(labels),
        "sampling_ms_one_image": 1000 * one_seconds,
    }
    if not folder:
        small = tf.nn.avg_pool2d(images, 2, 2, "VALID")  # 56x56 -> 28x28 for the classifier
        predicted = np.argmax(CLASSIFIER[0].predict(small, verbose=0), -1)
        out["conditional_sample_accuracy"] = float(np.mean(predicted == labels))
        out["classifier_accuracy_real_test"] = CLASSIFIER[1]
    del one
    return out


CLASSIFIER = []


def main(argv):
    del argv
    CLASSIFIER.extend(classifier(2 if FLAGS.quick else 5))
    rows = [run_variant(name) for name in FLAGS.variants]
    for row in rows:
        print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()})
    write_json(FLAGS.output, {"machine": machine(), "image_size": SIZE, "rows": rows})


if __name__ == "__main__":
    app.run(main)
