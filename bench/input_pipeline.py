r"""Image-folder input pipeline against the training step, side by side in one process.

A folder of real Fashion-MNIST images written as 80x80 RGB PNGs (tinted per channel, upscaled
with Pillow) is read at the vqvae_64 config's 64x64x3. Three rates, images/s:

  decode  the first pass: PNG decode + alpha/channels + centre crop + antialiased resize in a
          parallel tf.data map, written to the decoded cache (what a new folder costs, once);
  cached  later passes: the training input (`DataSource.load` -> `data.batched`) from the cache;
  train   `VQVAE.train_step` of the vqvae_64 config at its batch size (64), jit off.

    python -m bench.input_pipeline [--num_images=10000] [--output=bench_results/input_pipeline.json]
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

from bench.common import machine, write_json

flags.DEFINE_integer("num_images", 10_000, "PNG files in the folder.")
flags.DEFINE_integer("train_steps", 20, "Timed training steps.")
flags.DEFINE_string("output", None, "JSON file for the results.")
FLAGS = flags.FLAGS


def write_folder(root: str, n: int) -> None:
    from PIL import Image

    from vqvae_tf.data import idx_files

    images, labels = idx_files.load_arrays(idx_files.find_idx_dir("fashion_mnist"), "train")
    for i in range(n):
        x = images[i % len(images), :, :, 0]
        rgb = np.stack([x, x // 2, 255 - x], axis=-1)
        d = os.path.join(root, f"c{labels[i % len(labels)]}")
        os.makedirs(d, exist_ok=True)
        Image.fromarray(rgb, "RGB").resize((80, 80), Image.BILINEAR).save(os.path.join(d, f"{i:05d}.png"))


def main(argv):
    del argv
    from vqvae_tf import data, get_config

    tmp = tempfile.mkdtemp(prefix="bench-input-")
    os.environ["VQVAE_CACHE_DIR"] = os.path.join(tmp, "cache")
    try:
        folder = os.path.join(tmp, "photos")
        write_folder(folder, FLAGS.num_images)
        config = get_config("vqvae_64")
        source = data.DataSource("image_folder", folder, image_size=64, channels=3)

        start = time.perf_counter()
        info = source.info()  # the one decoding pass, into the cache
        decode_seconds = time.perf_counter() - start
        decoded = sum(info.num_examples.values())

        ds = data.batched(source.load("train"), config.batch_size, training=True, seed=0)
        it = iter(ds)
        batches = info.num_examples["train"] // config.batch_size
        for _ in range(batches):  # the first epoch fills the in-memory cache
            next(it)
        start = time.perf_counter()
        for _ in range(batches):
            images, _ = next(it)
        cached_rate = batches * config.batch_size / (time.perf_counter() - start)

        keras.utils.set_random_seed(0)
        train_vars = dict(data_variance=source.pixel_variance())
        model = config.build(**train_vars)
        model.compile(optimizer=config.make_optimizer())
        step = tf.function(model.train_step)
        for _ in range(3):
            step(next(it)[0])
        fixed = [next(it)[0] for _ in range(FLAGS.train_steps)]
        start = time.perf_counter()
        for x in fixed:
            logs = step(x)
        float(logs["loss"])
        train_rate = FLAGS.train_steps * config.batch_size / (time.perf_counter() - start)
        decode_rate = decoded / decode_seconds
        write_json(
            FLAGS.output,
            {
                "machine": machine(),
                "num_images": FLAGS.num_images,
                "source_size": [80, 80, 3],
                "image_shape": list(info.image_shape),
                "batch_size": config.batch_size,
                "decode_images_per_second": decode_rate,
                "cached_images_per_second": cached_rate,
                "train_images_per_second": train_rate,
                "decode_over_train": decode_rate / train_rate,
                "cached_over_train": cached_rate / train_rate,
            },
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    app.run(main)
