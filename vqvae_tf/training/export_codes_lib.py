"""Encoding a dataset into its codes (the library behind `python -m train.export_codes`).

Writes ``W/codes/`` in the format of `vqvae_tf.data.codes`, which `train_prior_lib` reads.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np
import tensorflow as tf

from vqvae_tf import data
from vqvae_tf.data import codes
from vqvae_tf.training import train_vqvae_lib
from vqvae_tf.training.stage import Stage
from vqvae_tf.training.workdir import Workdir
from vqvae_tf.utils import checks, files, progress


def export_codes(
    model,
    dataset: str | data.DataSource,
    out_dir: str,
    data_dir: str | None = None,
    source_checkpoint: str | None = None,
    batch_size: int = 500,
    shard_size: int = 25_000,
    overwrite: bool = True,
) -> dict:
    """Encodes the train and test splits of `dataset` (a name, read from `data_dir`, or a
    `DataSource`) with `model` (a `VQVAE`, or a `VQVAE2`: both grids) into `out_dir`.

    Returns the metadata written to meta.json. Deterministic: file order, no shuffling.

    Raises:
      ValueError: the data's image shape is not the model's.
    """
    checks.positive_int("batch_size", batch_size)
    checks.positive_int("shard_size", shard_size)
    source = dataset if isinstance(dataset, data.DataSource) else data.DataSource(dataset, data_dir)
    info = source.info()
    if tuple(info.image_shape) != tuple(model.image_shape):
        raise ValueError(
            f"{source.describe()} gives images of shape {tuple(info.image_shape)}, but the VQ-VAE takes "
            f"{tuple(model.image_shape)}: pass --image_size / --channels to match."
        )
    encode = tf.function(lambda images: model.to_prior_grids(model.encode_grids(images)))
    several = len(model.code_grids) > 1
    counts = {}
    class_counts = np.zeros(int(info.num_classes), np.int64)
    start = time.time()
    with files.atomic_directory(out_dir, overwrite=overwrite) as tmp:
        for split in codes.SPLITS:
            total = info.num_examples.get(split)
            num_shards = max(1, math.ceil((total or 1) / shard_size))
            writers, written = None, 0
            shard_paths = [os.path.join(tmp, name) for name in codes.shard_names(split, num_shards)]
            try:
                writers = [tf.io.TFRecordWriter(p) for p in shard_paths]
                for images, labels in data.batched(source.load(split), batch_size, training=False):
                    batch_codes = {name: grid.numpy() for name, grid in encode(images).items()}
                    if split == "train" and info.num_classes:
                        class_counts += np.bincount(labels.numpy(), minlength=len(class_counts))[: len(class_counts)]
                    for i, y in enumerate(labels.numpy()):
                        example = {name: grid[i] for name, grid in batch_codes.items()}
                        writers[min(written // shard_size, num_shards - 1)].write(codes.serialize_example(example, y))
                        written += 1
                    if written % (20 * batch_size) < batch_size:
                        progress.log(
                            f"[export_codes] {split}: {written}/{total or '?'} images ({time.time() - start:.0f}s)"
                        )
            finally:
                for w in writers or []:
                    w.close()
            counts[split] = written
        grids = {name: list(shape) for name, shape in model.prior_grids().items()}
        meta = {
            "format_version": files.FORMAT_VERSION,
            "model": model.model_name,
            "prior_family": model.prior_family,
            "num_embeddings": int(model.num_embeddings),
            "image_shape": list(model.image_shape),
            "num_classes": int(info.num_classes),
            "class_names": list(info.class_names),
            "dataset": source.name,
            "data": source.to_dict(),
            "data_fingerprint": source.fingerprint(),
            "counts": counts,
            # Training examples per class (what train.sample draws labels from).
            "class_counts": [int(c) for c in class_counts],
            "shards": {s: sorted(f for f in os.listdir(tmp) if f.startswith(s + "-")) for s in codes.SPLITS},
            "source_checkpoint": source_checkpoint,
        }
        if several:  # VQ-VAE-2: one feature per grid
            meta["grids"] = grids
        else:
            # The grid the prior models (`VQVAE.prior_grid_shape`): residual VQ's `depth` codes
            # of a position lie side by side along the row.
            meta.update(
                latent_shape=grids["codes"],
                depth=int(model.codes_per_position),
                codes_shape=list(model.codes_shape),
                quantizer=model.quantizer_type,
            )
        files.atomic_write_json(os.path.join(tmp, codes.META), meta)
    progress.log(f"[export_codes] wrote {counts} codes to {out_dir} in {time.time() - start:.0f}s")
    return meta


def codes_up_to_date(workdir: str, data_dir: str | None = None, **data_overrides) -> str | None:
    """Why the codes in ``W/codes`` need no new export (they come from the latest VQ-VAE checkpoint
    and the same data), or None: the one skip test of the codes, for this stage and the pipeline."""
    out_dir = Workdir(workdir).codes
    if not os.path.exists(os.path.join(out_dir, codes.META)):
        return None
    try:
        meta = codes.load_meta(out_dir)
    except codes.CodesError:
        return None
    checkpoint = tf.train.latest_checkpoint(Workdir(workdir).vqvae.checkpoints)
    fingerprint = train_vqvae_lib.trained_data_source(workdir, data_dir=data_dir, **data_overrides).fingerprint()
    if checkpoint is None or meta.get("data_fingerprint", fingerprint) != fingerprint:
        return None
    if meta.get("source_checkpoint") != os.path.basename(checkpoint):
        return None
    return f"Codes in {out_dir} already come from {meta['source_checkpoint']}"


def export_codes_stage(
    workdir: str, data_dir: str | None = None, batch_size: int = 500, overwrite: bool = False, **data_overrides
) -> dict:
    """Encodes train/test with the latest VQ-VAE checkpoint of `workdir` into ``W/codes``: the
    data it was trained on, with `data_dir` and `data_overrides` (`DataSource` fields) that are
    not None. Skips the work when the codes there come from that same checkpoint and data
    (unless `overwrite`)."""
    out_dir = Workdir(workdir).codes
    reason = None if overwrite else codes_up_to_date(workdir, data_dir, **data_overrides)
    if reason:
        progress.log(f"{reason}; skipping.")
        return codes.load_meta(out_dir)
    model, checkpoint = train_vqvae_lib.load_trained_model_and_path(workdir)
    source = train_vqvae_lib.trained_data_source(workdir, data_dir=data_dir, **data_overrides)
    return export_codes(
        model,
        source,
        out_dir,
        source_checkpoint=os.path.basename(checkpoint),
        batch_size=batch_size,
        overwrite=True,
    )


STAGE = Stage(
    "export codes",
    lambda ctx: export_codes_stage(ctx.workdir.root, ctx.options.data.data_dir, overwrite=True),
    lambda ctx: codes_up_to_date(ctx.workdir.root, ctx.options.data.data_dir),
)
