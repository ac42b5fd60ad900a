"""Trained models from either source: a workdir's latest checkpoints or a pretrained preset.

The export and sample scripts take ``--workdir=W`` or ``--preset=NAME_OR_DIR`` (exactly one);
this is the one place that turns either into models.
"""

from __future__ import annotations

from vqvae_tf import data
from vqvae_tf.models import autoencoders, presets, priors
from vqvae_tf.training import train_prior_lib, train_vqvae_lib
from vqvae_tf.training.workdir import Workdir


def check_one_source(workdir: str | None, preset: str | None) -> None:
    if bool(workdir) == bool(preset):
        raise ValueError("Give exactly one of --workdir (a trained run) and --preset (a pretrained preset).")


def _from_preset(preset: str, kind: str):
    # The model classes a preset may hold, by config.json's class_name: the registered ones.
    classes = {**autoencoders.model_classes(), **priors.model_classes()}
    return classes[presets.class_name(preset, kind)].from_preset(preset)


def load_vqvae(workdir: str | None = None, preset: str | None = None):
    """The autoencoder (a `VQVAE`, `VQVAE2` or any registered one) of a workdir or a preset."""
    check_one_source(workdir, preset)
    return _from_preset(preset, "vqvae") if preset else train_vqvae_lib.load_trained_model(workdir)


def has_prior(workdir: str | None = None, preset: str | None = None) -> bool:
    check_one_source(workdir, preset)
    if workdir:
        return Workdir(workdir).prior.exists()
    try:
        presets.preset_dir(preset, "prior")
    except presets.PresetError:
        return False
    return True


def load_prior(workdir: str | None = None, preset: str | None = None):
    """The prior (the model of its prior family) of a workdir or a preset."""
    check_one_source(workdir, preset)
    return _from_preset(preset, "prior") if preset else train_prior_lib.load_trained_prior(workdir)


def prior_classes(workdir: str | None = None, preset: str | None = None) -> dict:
    """{"class_counts": [...], "class_names": [...]} of the prior's training codes (empty lists
    when unknown)."""
    check_one_source(workdir, preset)
    if preset:
        meta = presets.read_metadata(preset, "prior")
    else:
        meta = (Workdir(workdir).prior.read_config() or {}).get("codes_meta") or {}
    return {"class_counts": meta.get("class_counts") or [], "class_names": meta.get("class_names") or []}


def data_source(workdir: str | None = None, preset: str | None = None, data_dir: str | None = None) -> data.DataSource:
    """The data the VQ-VAE was trained on (`data_dir` replacing its directory when given)."""
    check_one_source(workdir, preset)
    if workdir:
        return train_vqvae_lib.trained_data_source(workdir, data_dir=data_dir)
    meta = presets.read_metadata(preset, "vqvae")
    if meta.get("data"):
        return data.DataSource.from_dict(meta["data"], data_dir=data_dir)
    if data_dir and meta.get("image_shape"):  # a preset made without data (a converted checkpoint)
        h, w, c = meta["image_shape"]
        return data.DataSource(name="image_folder", data_dir=data_dir, image_size=(h, w), channels=c)
    raise presets.PresetError(
        f"Preset {preset} does not record its data (metadata.json has no 'data'): "
        "pass --data_dir=a folder of images to check it on."
    )
