"""The pipeline's stages, in order: the one list a new stage is registered in.

Each stage is declared as `STAGE` beside the library that does its work (`Stage`, `StageContext`
and `run_stages`: `vqvae_tf.training.stage`). Add a stage: its library with a `STAGE` and one
entry here (or pass a list of your own to `pipeline_lib.run_pipeline(stages=...)`).
"""

from __future__ import annotations

from vqvae_tf.pipeline import report
from vqvae_tf.serving import export_savedmodel_lib, export_tflite_lib
from vqvae_tf.training import export_codes_lib, train_prior_lib, train_vqvae_lib
from vqvae_tf.training.stage import Stage, StageContext, run_stages  # noqa: F401 (API)
from vqvae_tf.training.train_vqvae_lib import vqvae_stage_flags  # noqa: F401 (API)

PIPELINE_STAGES = (
    train_vqvae_lib.STAGE,  # W/vqvae/
    export_codes_lib.STAGE,  # W/codes/
    train_prior_lib.STAGE,  # W/prior/
    export_savedmodel_lib.STAGE,  # W/export/vqvae/, W/export/prior/
    export_tflite_lib.STAGE,  # W/export/tflite/
    report.STAGE,  # W/presets/, W/REPORT.md
)
