"""Stage functions behind the scripts that are more than one library call."""

from __future__ import annotations

import json
import os

from vqvae_tf import codes, training


def export_codes_stage(workdir: str, data_dir: str | None = None, batch_size: int = 500, overwrite: bool = False) -> dict:
    """Encodes train/test with the latest VQ-VAE checkpoint of `workdir` into ``workdir/codes``.
    Skips the work when the codes there come from that same checkpoint (unless `overwrite`)."""
    model, checkpoint = training.load_trained_model_and_path(workdir)
    with open(os.path.join(workdir, training.SUBDIR, "config.json")) as f:
        dataset = json.load(f)["config"]["dataset"]
    out_dir = os.path.join(workdir, "codes")
    if not overwrite and os.path.exists(os.path.join(out_dir, codes.META)):
        try:
            meta = codes.load_meta(out_dir)
        except codes.CodesError:
            meta = None
        if meta and meta.get("source_checkpoint") == os.path.basename(checkpoint):
            training.log_line(f"Codes in {out_dir} already come from {meta['source_checkpoint']}; skipping.")
            return meta
    return codes.export_codes(
        model, dataset, out_dir, data_dir=data_dir, source_checkpoint=os.path.basename(checkpoint),
        batch_size=batch_size, overwrite=True, log=training.log_line,
    )
