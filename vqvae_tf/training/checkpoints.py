"""Resumable checkpoints that never start over silently.

`tf.train.CheckpointManager` writes the data and index files first and then replaces the
``checkpoint`` state file atomically, so a kill during a save leaves the previous checkpoint as
"latest". `restore_newest` tries the newest checkpoint first and falls back to older ones
when a file is truncated or corrupt; if checkpoints exist but none is readable it raises instead
of training from scratch.
"""

from __future__ import annotations

import glob
import os

import tensorflow as tf
from absl import logging

from vqvae_tf.utils import progress


class CheckpointError(RuntimeError):
    """Checkpoints exist but none can be restored."""


def _candidates(manager: tf.train.CheckpointManager) -> list[str]:
    """Checkpoints to try, newest first: those the state file lists (files of a save that was
    killed are never listed there), or, if the state file lists none (deleted or damaged), the
    complete-looking ones on disk."""
    listed = list(manager.checkpoints)
    if listed:
        return list(reversed(listed))
    on_disk = [p[: -len(".index")] for p in glob.glob(os.path.join(manager.directory, "ckpt-*.index"))]
    on_disk = [p for p in on_disk if p.rsplit("-", 1)[-1].isdigit()]
    return sorted(on_disk, key=lambda p: int(p.rsplit("-", 1)[-1]), reverse=True)


def make_manager(model, directory: str, max_to_keep: int = 3):
    """(tf.train.Checkpoint of `model`, its optimizer and its training objective's state (an
    autoencoder's discriminator and its optimizer), its CheckpointManager in `directory`)."""
    objective = getattr(model, "objective", None)
    extra = objective.checkpoint_objects() if objective is not None else {}
    untracked = untracked_state(model)
    if untracked:
        # Keras 3 keeps a layer's lists of sub-layers out of TF's object graph: their trainable
        # variables reach a checkpoint through the optimizer, the others (a residual VQ's stages'
        # EMA codebooks and statistics, a frozen encoder's levels) through nothing. They are listed
        # here; a model with none keeps the layout its checkpoints always had.
        extra["untracked_state"] = untracked
    ckpt = tf.train.Checkpoint(model=model, optimizer=model.optimizer, **extra)
    return ckpt, tf.train.CheckpointManager(ckpt, directory, max_to_keep=max_to_keep, checkpoint_name="ckpt")


def untracked_state(model) -> list:
    """The non-trainable variables of `model` that TF's object graph does not reach from it."""
    seen, stack = set(), [model]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        children = getattr(node, "_trackable_children", None)
        if children is not None:
            stack.extend(children(save_type="checkpoint").values())
    return [
        v for v in model.weights if not v.trainable and id(v) not in seen and id(getattr(v, "value", v)) not in seen
    ]


def save(manager: tf.train.CheckpointManager, step: int) -> str:
    """Saves checkpoint `step`; a failed write (disk full, permissions) raises CheckpointError
    naming the directory. The previous checkpoints stay valid: the state file is only updated
    after a complete save."""
    try:
        return manager.save(checkpoint_number=step)
    except (OSError, tf.errors.OpError) as e:
        raise CheckpointError(
            f"Could not write checkpoint {step} to {manager.directory}: {getattr(e, 'strerror', None) or e}. "
            "Earlier checkpoints are intact; free space or fix permissions and re-run to resume."
        ) from e


def restore_newest(checkpoint: tf.train.Checkpoint, manager: tf.train.CheckpointManager) -> str | None:
    """Restores the newest readable checkpoint; returns its path, or None if there is none.

    Raises:
      CheckpointError: checkpoints exist but all are unreadable.
    """
    candidates = _candidates(manager)
    errors = []
    for path in candidates:
        try:
            checkpoint.restore(path).assert_existing_objects_matched()
        except Exception as e:  # OpError, ValueError, IndexError ("Read less bytes than requested"), ...  # noqa: BLE001
            message = str(e).strip().splitlines()[0][:300]
            logging.warning("Checkpoint %s is unreadable (%s); trying an older one.", path, message)
            progress.log(f"WARNING: checkpoint {path} is corrupt or truncated ({type(e).__name__}); falling back.")
            errors.append(f"{path}: {type(e).__name__}: {message}")
            continue
        if errors:
            progress.log(f"Fell back to checkpoint {path}.")
        return path
    if errors:
        raise CheckpointError(
            f"No readable checkpoint in {manager.directory}; refusing to start over silently. "
            "Problems:\n  " + "\n  ".join(errors) + "\nDelete that directory to train from scratch."
        )
    return None
