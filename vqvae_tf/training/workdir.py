"""The layout of a run directory, in one place (no other module spells these paths)::

    W/vqvae/     config.json flags.txt checkpoints/ tensorboard/ metrics.json reconstructions.png codebook_usage.png
    W/codes/     meta.json *.tfrecord                   (vqvae_tf.data.codes)
    W/prior/     config.json flags.txt checkpoints/ tensorboard/ metrics.json samples.png
    W/export/    vqvae/N/ prior/N/ models.config batching_parameters.txt tflite/   (vqvae_tf.serving)
    W/presets/   vqvae/ prior/: config.json model.weights.h5 metadata.json        (vqvae_tf.models.presets)
    W/REPORT.md  W/pipeline_flags.txt
    W/export/savedmodel_export.json  W/export/tflite/source.json   (which checkpoints the exports are of)

A new stage keeps its files in `Workdir.stage_dir(name)` (``W/<name>/``, nothing to add here);
`StageDir.trained_to` is the one test of whether a trained stage is done (the pipeline and bench/
skip on it).
"""

from __future__ import annotations

import json
import os


class StageDir:
    """The directory of one trained stage (``W/vqvae`` or ``W/prior``)."""

    def __init__(self, path: str):
        self.path = path
        self.name = os.path.basename(path)

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    @property
    def config(self) -> str:
        """config.json: what the stage's model is rebuilt from."""
        return self.file("config.json")

    @property
    def flags(self) -> str:
        return self.file("flags.txt")

    @property
    def checkpoints(self) -> str:
        return self.file("checkpoints")

    @property
    def tensorboard(self) -> str:
        return self.file("tensorboard")

    @property
    def metrics(self) -> str:
        return self.file("metrics.json")

    def exists(self) -> bool:
        """Whether the stage has been started (its config.json is written first)."""
        return os.path.exists(self.config)

    def read_config(self) -> dict | None:
        """config.json, or None when it is missing or unreadable."""
        return read_json(self.config)

    def read_metrics(self) -> dict | None:
        """metrics.json, or None when it is missing or unreadable (the stage has not finished)."""
        return read_json(self.metrics)

    def trained_to(self, steps: int) -> bool:
        """Whether the stage finished (trained, evaluated, metrics written) at `steps` steps."""
        return (self.read_metrics() or {}).get("steps") == steps


def read_json(path: str) -> dict | None:
    """A JSON file of the run directory, or None when it is missing or unreadable."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


class Workdir:
    """Paths of a run directory ``W`` (see the module docstring)."""

    def __init__(self, root: str):
        self.root = root
        self.vqvae = self.stage_dir("vqvae")
        self.prior = self.stage_dir("prior")
        self.codes = os.path.join(root, "codes")
        self.export = os.path.join(root, "export")
        self.presets = os.path.join(root, "presets")  # vqvae/ and prior/ (vqvae_tf.models.presets)
        self.report = os.path.join(root, "REPORT.md")
        self.reconstructions_png = self.vqvae.file("reconstructions.png")
        self.codebook_usage_png = self.vqvae.file("codebook_usage.png")
        self.samples_png = self.prior.file("samples.png")
        self.pipeline_flags = os.path.join(root, "pipeline_flags.txt")
        # The pipeline's markers: which checkpoints the SavedModels and TFLite files were made from.
        self.savedmodel_marker = os.path.join(self.export, "savedmodel_export.json")
        self.tflite_marker = os.path.join(self.export, "tflite", "source.json")

    def stage_dir(self, name: str) -> StageDir:
        """``W/<name>/``: the directory of a stage's files."""
        return StageDir(os.path.join(self.root, name))
