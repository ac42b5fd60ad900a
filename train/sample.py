r"""Samples images from the trained prior + decoder into a PNG grid.

    python -m train.sample --workdir=/tmp/run --num_samples=64 --temperature=1.0 --seed=0 \
        --output=/tmp/samples.png [--labels=0,1,2] [--top_k=20]

The same seed gives the same file. For a conditional prior, --labels lists one label per sample,
or a single label used for all of them.
"""

import numpy as np
from absl import app, flags, logging

from train import common
from vqvae_tf import images, prior_training, sampling, training

flags.DEFINE_string("workdir", None, "Workdir with vqvae/ and prior/.", required=True)
flags.DEFINE_integer("num_samples", 64, "Number of samples.")
flags.DEFINE_float("temperature", 1.0, "Softmax temperature (> 0).")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_list("labels", None, "Class labels for a conditional prior (one per sample, or one for all).")
flags.DEFINE_integer("top_k", None, "Sample only among the k most likely codes.")
flags.DEFINE_integer("columns", 8, "Columns of the PNG grid.")
flags.DEFINE_string("output", None, "PNG file to write.", required=True)
for _name in ("num_samples", "temperature", "top_k", "columns"):
    common.positive(_name)
FLAGS = flags.FLAGS


def parse_labels(values, num_samples):
    if values is None:
        return None
    try:
        labels = [int(v) for v in values]
    except ValueError as e:
        raise app.UsageError(f"--labels must be integers, got {values}") from e
    if len(labels) == 1:
        labels = labels * num_samples
    if len(labels) != num_samples:
        raise app.UsageError(f"--labels has {len(labels)} values for --num_samples={num_samples}.")
    return np.array(labels, np.int32)


def main(argv):
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    labels = parse_labels(FLAGS.labels, FLAGS.num_samples)
    prior = prior_training.load_trained_prior(FLAGS.workdir)
    if prior.num_classes and labels is None:
        raise app.UsageError(f"The prior is class-conditional ({prior.num_classes} classes): pass --labels.")
    if labels is not None and not prior.num_classes:
        raise app.UsageError("The prior is unconditional: drop --labels.")
    if labels is not None and (labels.min() < 0 or labels.max() >= prior.num_classes):
        raise app.UsageError(f"--labels must be in [0, {prior.num_classes}).")
    vqvae = training.load_trained_model(FLAGS.workdir)
    codes = sampling.sample_codes(
        prior, FLAGS.num_samples, temperature=FLAGS.temperature, seed=FLAGS.seed, labels=labels, top_k=FLAGS.top_k
    )
    images.write_png(FLAGS.output, images.grid(vqvae.decode(codes).numpy(), FLAGS.columns, scale=2))
    training.log_line(f"Wrote {FLAGS.num_samples} samples to {FLAGS.output}.")


if __name__ == "__main__":
    app.run(main)
