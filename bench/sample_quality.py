r"""Sample quality of a class-conditional prior, judged by an independent classifier.

A small CNN (not part of the library, nothing shared with the VQ-VAE) is trained on real
Fashion-MNIST; it labels decoded class-conditional samples, and we report the fraction it assigns
to the class the prior was conditioned on, next to its accuracy on real test images (and on
VQ-VAE reconstructions of them, the ceiling that the decoder allows).

    python -m bench.sample_quality --workdir=runs/demo [--quick] [--output=...]
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from absl import app, flags

from bench.common import classifier, machine, write_json
from vqvae_tf import data, sample_codes
from vqvae_tf.training import train_prior_lib, train_vqvae_lib

flags.DEFINE_string("workdir", None, "Workdir with a trained VQ-VAE and class-conditional prior.", required=True)
flags.DEFINE_integer("samples_per_class", 100, "Samples drawn per class.")
flags.DEFINE_float("temperature", 1.0, "Sampling temperature.")
flags.DEFINE_bool("quick", False, "Fewer classifier epochs and samples.")
flags.DEFINE_string("output", None, "JSON file for the results.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    epochs, per_class = (2, 20) if FLAGS.quick else (5, FLAGS.samples_per_class)
    clf, real_accuracy = classifier(epochs)
    vqvae = train_vqvae_lib.load_trained_model(FLAGS.workdir)
    prior = train_prior_lib.load_trained_prior(FLAGS.workdir)
    if not prior.num_classes:
        raise app.UsageError("The prior is unconditional; train it with --conditional.")
    xt, yt = next(iter(data.load("fashion_mnist", "test").batch(10000)))
    recon = tf.concat([vqvae(xt[i : i + 1000]) for i in range(0, 10000, 1000)], 0)
    recon_accuracy = float(np.mean(np.argmax(clf.predict(recon, verbose=0), -1) == yt.numpy()))
    labels = np.repeat(np.arange(prior.num_classes, dtype=np.int32), per_class)
    predicted = []
    for start in range(0, len(labels), 250):
        chunk = labels[start : start + 250]
        codes = sample_codes(prior, len(chunk), temperature=FLAGS.temperature, seed=start, labels=chunk)
        predicted.append(np.argmax(clf.predict(vqvae.decode(codes), verbose=0), -1))
    predicted = np.concatenate(predicted)
    per_class_acc = [float(np.mean(predicted[labels == c] == c)) for c in range(prior.num_classes)]
    write_json(
        FLAGS.output,
        {
            "machine": machine(),
            "classifier_epochs": epochs,
            "classifier_accuracy_real_test": real_accuracy,
            "classifier_accuracy_vqvae_reconstructions": recon_accuracy,
            "samples": int(len(labels)),
            "temperature": FLAGS.temperature,
            "conditional_sample_accuracy": float(np.mean(predicted == labels)),
            "per_class": per_class_acc,
        },
    )


if __name__ == "__main__":
    app.run(main)
