r"""The three priors on the same codes for the same training time: PixelCNN, the causal transformer
and MaskGIT, on the codes of the shipped Fashion-MNIST autoencoder (7x7, K=256), class-conditional.

Each network trains with its own prior config (`configs.get_prior_config(prior=...)`) for
--minutes of wall-clock time after its first (traced) step; a probe first estimates its step
count, where the cosine schedule ends. Reported: test bits/code and the bits/dim bound (PixelCNN, transformer:
exact likelihoods), MaskGIT's masked-token NLL (not a likelihood), and for all three the
accuracy of an independent classifier (bench.common.classifier) on class-conditional samples,
MaskGIT at 4, 8 and 16 steps, next to its accuracy on real and on reconstructed test images.

    python -m bench.priors --out=/work/bench_runs/priors --minutes=8
"""

from __future__ import annotations

import math
import os
import time

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

from bench.common import classifier, machine, write_json
from vqvae_tf import VQVAE, configs, data
from vqvae_tf.data import codes
from vqvae_tf.models import presets
from vqvae_tf.models.priors.sampling import sample_grids
from vqvae_tf.training import export_codes_lib, train_prior_lib

flags.DEFINE_string("out", None, "Directory for the codes and results.json.", required=True)
flags.DEFINE_float("minutes", 8.0, "Training time per prior.")
flags.DEFINE_list("priors", ["pixelcnn", "transformer", "maskgit"], "Networks to compare.")
flags.DEFINE_integer("samples_per_class", 100, "Class-conditional samples per class.")
flags.DEFINE_integer("probe_steps", 60, "Steps timed to size each run.")
FLAGS = flags.FLAGS


class TimeBudget(keras.callbacks.Callback):
    def __init__(self, seconds):
        super().__init__()
        self.seconds, self.start, self.steps = seconds, None, 0

    def on_train_batch_end(self, batch, logs=None):  # the clock starts after the first (traced) step
        self.steps += 1
        self.start = self.start or time.perf_counter()
        if time.perf_counter() - self.start > self.seconds:
            self.model.stop_training = True


def train(network: str, meta: dict, codes_dir: str, seconds: float) -> tuple:
    config = configs.get_prior_config(prior=network)
    config.conditional = True
    dataset = codes.read_codes(codes_dir, "train").shuffle(60_000, seed=0).repeat()
    dataset = dataset.batch(config.batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    probe = train_prior_lib.build_prior(config, meta)
    probe.fit(dataset, steps_per_epoch=10, epochs=1, verbose=0)  # trace
    start = time.perf_counter()
    probe.fit(dataset, steps_per_epoch=FLAGS.probe_steps, epochs=1, verbose=0)
    per_step = (time.perf_counter() - start) / FLAGS.probe_steps
    config.steps = max(100, int(seconds / per_step))
    keras.utils.set_random_seed(0)
    prior = train_prior_lib.build_prior(config, meta)
    budget = TimeBudget(seconds)
    # The time budget ends the run; the schedule ends at the probe's estimate and stays at its
    # final rate if the machine turns out faster than the probe saw.
    prior.fit(dataset, steps_per_epoch=10 * config.steps, epochs=1, verbose=0, callbacks=[budget])
    seconds = time.perf_counter() - budget.start
    return prior, config, {"steps": budget.steps, "seconds_after_first_step": seconds, "batch": config.batch_size}


def sample_accuracy(prior, vqvae, clf, per_class: int, **options) -> tuple:
    labels = np.repeat(np.arange(prior.num_classes, dtype=np.int32), per_class)
    predicted = []
    for first in range(0, len(labels), 250):
        chunk = labels[first : first + 250]
        grid = sample_grids(prior, len(chunk), 1.0, first, chunk, **options)["codes"]
        predicted.append(np.argmax(clf.predict(vqvae.decode(grid), verbose=0), -1))
    return float(np.mean(np.concatenate(predicted) == labels))


def main(argv):
    del argv
    os.makedirs(FLAGS.out, exist_ok=True)
    vqvae = VQVAE.from_preset("fashion_mnist")
    codes_dir = os.path.join(FLAGS.out, "codes")
    if not os.path.isfile(os.path.join(codes_dir, "meta.json")):
        export_codes_lib.export_codes(vqvae, "fashion_mnist", codes_dir)
    meta = codes.load_meta(codes_dir)
    reconstruction = presets.read_metadata("fashion_mnist", "vqvae")["test_metrics"]["bits_per_dim_reconstruction"]
    clf, real_accuracy = classifier(5)
    xt, yt = next(iter(data.load("fashion_mnist", "test").batch(10000)))
    recon = tf.concat([vqvae(xt[i : i + 1000]) for i in range(0, 10000, 1000)], 0)
    results = {
        "machine": machine(),
        "minutes_per_prior": FLAGS.minutes,
        "classifier_accuracy_real_test": real_accuracy,
        "classifier_accuracy_reconstructions": float(np.mean(np.argmax(clf.predict(recon, verbose=0), -1) == yt)),
        "priors": {},
    }
    test = codes.read_codes(codes_dir, "test").batch(500)
    for network in FLAGS.priors:
        print(f"Training {network} for {FLAGS.minutes} min...", flush=True)
        prior, config, run = train(network, meta, codes_dir, FLAGS.minutes * 60)
        bits = float(prior.evaluate(test, verbose=0, return_dict=True)["bits_per_code"])
        row = {**run, "config": config.to_dict(), "parameters": int(prior.count_params())}
        if prior.exact_likelihood:
            row["test_bits_per_code"] = bits
            row["bits_per_dim"] = bits * prior.num_codes / 784 + reconstruction
        else:
            row["test_masked_bits_per_code"] = bits
        if network == "maskgit":
            for steps in (4, 8, 16):
                acc = sample_accuracy(prior, vqvae, clf, FLAGS.samples_per_class, steps=steps)
                row[f"sample_accuracy_steps_{steps}"] = acc
        else:
            row["sample_accuracy"] = sample_accuracy(prior, vqvae, clf, FLAGS.samples_per_class)
        results["priors"][network] = row
        print(network, {k: v for k, v in row.items() if k != "config"}, flush=True)
        write_json(os.path.join(FLAGS.out, "results.json"), results)
    print(f"log2 K = {math.log2(meta['num_embeddings'])}")


if __name__ == "__main__":
    app.run(main)
