"""Decoded samples of a trained prior as a PNG grid (the library behind `python -m train.sample`)."""

from __future__ import annotations

import numpy as np

from vqvae_tf.models.priors.sampling import sample_images
from vqvae_tf.training import models_lib
from vqvae_tf.utils import images, progress


class LabelsError(ValueError):
    """--labels that do not fit the prior or the number of samples."""


def resolve_labels(values, num_samples: int, num_classes: int, class_counts=None, seed: int = 0, class_names=()):
    """Labels int32 [num_samples] from `values` (class names or numbers, as strings or ints: one
    per sample, or one for all), or None for an unconditional prior. A value that is one of
    `class_names` means that class; any other must be a number. Without `values`, a conditional
    prior's labels are drawn with `seed` from the training class frequencies `class_counts`
    (uniform when unknown). Raises LabelsError naming the problem."""
    if values is None:
        if not num_classes:
            return None
        counts = np.asarray(class_counts if class_counts is not None else [], np.float64)
        if len(counts) != num_classes or counts.sum() <= 0:
            counts = np.ones(num_classes)
        rng = np.random.default_rng(seed)
        return rng.choice(num_classes, size=num_samples, p=counts / counts.sum()).astype(np.int32)
    if not num_classes:
        raise LabelsError("The prior is unconditional: drop --labels.")
    names = {str(n): i for i, n in enumerate(class_names or ())}
    labels = []
    for v in values:
        if str(v).strip() in names:
            labels.append(names[str(v).strip()])
            continue
        try:
            labels.append(int(v))
        except ValueError as e:
            known = f"one of the class names ({', '.join(names)}) or " if names else ""
            raise LabelsError(f"--labels value {v!r} is not {known}an integer class number.") from e
    if len(labels) == 1:
        labels = labels * num_samples
    if len(labels) != num_samples:
        raise LabelsError(f"--labels has {len(labels)} values for --num_samples={num_samples}.")
    if min(labels) < 0 or max(labels) >= num_classes:
        raise LabelsError(f"--labels must be in [0, {num_classes}).")
    return np.array(labels, np.int32)


def write_samples(
    workdir: str | None,
    output: str,
    num_samples: int,
    temperature=1.0,
    seed=0,
    labels=None,
    top_k=None,
    columns=8,
    preset: str | None = None,
    **options,
) -> np.ndarray | None:
    """Samples `num_samples` images from the prior and VQ-VAE of `workdir` (or of `preset`) into
    the PNG `output`. `labels` as for `resolve_labels` (drawn from the training class frequencies
    when None for a conditional prior). The same seed gives the same file. Returns the labels
    used (or None). `options`: the prior's own sampling options (`sample_grids`; None: its default),
    e.g. MaskGIT's ``steps`` and ``guidance``."""
    prior = models_lib.load_prior(workdir, preset)
    classes = models_lib.prior_classes(workdir, preset)
    class_counts = classes["class_counts"] or None
    drawn = labels is None and prior.num_classes > 0
    labels = resolve_labels(labels, num_samples, prior.num_classes, class_counts, seed, classes["class_names"])
    if drawn:
        source = "training class frequencies" if class_counts else "uniformly (no class counts recorded)"
        progress.log(f"No --labels: drew labels from the {source} with seed {seed}: {','.join(map(str, labels))}")
    vqvae = models_lib.load_vqvae(workdir, preset)
    samples = sample_images(prior, vqvae, num_samples, temperature, seed, labels, top_k, **options)
    images.write_png(output, images.grid(samples, columns, scale=2))
    progress.log(f"Wrote {num_samples} samples to {output}.")
    return labels
