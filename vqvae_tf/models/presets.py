"""Pretrained presets, keras-hub style: one directory per model.

    config.json        {"module", "class_name", "config": model.get_config(), "registered_name"}
    model.weights.h5   model.save_weights
    metadata.json      dataset and fingerprint, image shape, steps, command and commit, test
                       metrics, parameter count, license

A preset *name* is one of the shipped presets (`list_presets()`), whose directories live in
``vqvae_tf/weights/<name>/{vqvae,prior}/``; anything else is a directory: a model's own preset
directory, or a directory holding ``vqvae/`` and ``prior/`` (what the pipeline writes to
``W/presets/``). The models' `from_preset` and `save_to_preset` (`PresetMixin`) call this module;
it imports no model (the registries, late, in `kind_of`), so the models can import it.
"""

from __future__ import annotations

import json
import os

import keras
from keras.src.saving import saving_lib  # save_weights_only(objects_to_skip=): Keras has no public form

from vqvae_tf.utils import files

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
METADATA_FILE = "metadata.json"
WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "weights")
# The shipped presets: name -> one line.
PRESETS = {
    "fashion_mnist": "Fashion-MNIST 28x28x1 -> 7x7 codes (K=256, EMA VQ-VAE) and its class-conditional "
    "gated PixelCNN prior, made by `make demo`",
    "clipart_64": "Clip art 64x64x3 -> 16x16 codes (K=256, 2048 bits; L1 then + LPIPS-VGG) and its "
    "class-conditional MaskGIT prior over the 22 openclipart categories, made by `make demo DATA=clipart`",
    "clipart_64_fsq": "Clip art 64x64x3 -> 8x8 FSQ codes (levels 8,5,5,5: 1000 codes, 638 bits; L1) and its "
    "class-conditional MaskGIT prior: a quarter of the tokens, blurrier; made by the clipart recipe",
}


def kind_of(class_name: str) -> str | None:
    """ "vqvae" for a registered autoencoder class, "prior" for a prior family's model, else None."""
    from vqvae_tf.models import autoencoders, priors  # (the registries import the models, which import this)

    if class_name in autoencoders.model_classes():
        return "vqvae"
    if class_name in priors.model_classes():
        return "prior"
    return None


class PresetError(ValueError):
    """A preset that cannot be found or loaded; the message names the file or the known names."""


class PresetMixin:
    """`from_preset` / `save_to_preset` for the zoo's models (`VQVAE`, `VQVAE2`, `PixelCNN`,
    `HierarchicalPrior`, and any registered autoencoder or prior family's model): each is saved
    under its kind (`kind_of`)."""

    @classmethod
    def from_preset(cls, preset: str, load_weights: bool = True):
        """The model of a pretrained preset: a shipped name (`vqvae_tf.list_presets()`) or a
        preset directory (`save_to_preset`'s, or a pipeline's ``W/presets``), with its weights
        unless `load_weights` is False. Raises `PresetError` naming the problem."""
        return load(cls, preset, load_weights)

    def save_to_preset(self, directory: str, metadata: dict | None = None) -> str:
        """Writes this model as a preset directory (config.json, model.weights.h5, metadata.json)."""
        return save(self, directory, metadata)


def list_presets() -> dict:
    """{name: one-line description} of the shipped presets."""
    return dict(PRESETS)


def preset_dir(name_or_dir: str, kind: str) -> str:
    """The directory of the `kind` ("vqvae" or "prior") model of a preset name or directory."""
    if name_or_dir in PRESETS:
        directory = os.path.join(WEIGHTS_DIR, name_or_dir, kind)
        if not os.path.isdir(directory):
            raise PresetError(
                f"The shipped preset {name_or_dir!r} has no {kind} in {directory}: reinstall the package."
            )
        return directory
    if not os.path.isdir(str(name_or_dir)):
        raise PresetError(
            f"Unknown preset {name_or_dir!r}: it is neither a shipped preset ({', '.join(PRESETS)}) nor a directory."
        )
    if os.path.isfile(os.path.join(name_or_dir, CONFIG_FILE)):
        return str(name_or_dir)
    if os.path.isdir(os.path.join(name_or_dir, kind)):
        return os.path.join(name_or_dir, kind)
    raise PresetError(f"{name_or_dir} is not a preset directory: it has no {CONFIG_FILE} and no {kind}/ sub-directory.")


def _read_json(directory: str, name: str) -> dict:
    path = os.path.join(directory, name)
    if not os.path.isfile(path):
        raise PresetError(f"Preset directory {directory} is missing {name}.")
    try:
        with open(path) as f:
            return json.load(f)
    except ValueError as e:
        raise PresetError(f"{path} is not valid JSON: {e}") from e


def class_name(name_or_dir: str, kind: str) -> str:
    """The model class a preset's `kind` model is (config.json's ``class_name``)."""
    directory = preset_dir(name_or_dir, kind)
    name = _read_json(directory, CONFIG_FILE).get("class_name")
    if kind_of(name) != kind:
        raise PresetError(f"{os.path.join(directory, CONFIG_FILE)} names class {name!r}, not a {kind} model.")
    return name


def read_metadata(name_or_dir: str, kind: str) -> dict:
    """metadata.json of a preset's `kind` model."""
    return _read_json(preset_dir(name_or_dir, kind), METADATA_FILE)


def load(cls, name_or_dir: str, load_weights: bool = True):
    """A `cls` (VQVAE or PixelCNN) from a preset, with its weights unless `load_weights` is False.

    Raises:
      PresetError: unknown name, missing file, a preset of another model class, weights that do not
        fit the config.
    """
    kind = kind_of(cls.__name__)
    if kind is None:
        raise PresetError(
            f"{cls.__name__} is neither a registered autoencoder nor the model of a registered prior family."
        )
    for claims, load_model in _FOREIGN_LOADERS if kind == "vqvae" else ():
        if claims(name_or_dir):
            return load_model(cls, name_or_dir)
    directory = preset_dir(name_or_dir, kind)
    saved = _read_json(directory, CONFIG_FILE)
    class_name = saved.get("class_name")
    if class_name != cls.__name__:
        raise PresetError(
            f"{directory} holds a {class_name}, not a {cls.__name__}: load it with {class_name}.from_preset."
        )
    try:
        model = cls.from_config(saved["config"])
    except (TypeError, ValueError, KeyError) as e:
        raise PresetError(f"{os.path.join(directory, CONFIG_FILE)} does not describe a valid {class_name}: {e}") from e
    if not model.built:
        model.build()
    if load_weights:
        path = os.path.join(directory, WEIGHTS_FILE)
        if not os.path.isfile(path):
            raise PresetError(f"Preset directory {directory} is missing {WEIGHTS_FILE}.")
        try:
            model.load_weights(path)
        except (ValueError, KeyError, OSError) as e:
            raise PresetError(f"The weights in {path} do not fit the model of {CONFIG_FILE} there: {e}") from e
    return model


# Loaders of other libraries' checkpoints, asked before a preset directory is read: (claims(name),
# load(cls, name)). `vqvae_tf.convert` registers the diffusers / hf:// one when it is imported.
_FOREIGN_LOADERS: list = []


def register_foreign_loader(claims, load_model) -> None:
    """`from_preset(name)` of an autoencoder class returns ``load_model(cls, name)`` when
    ``claims(name)``: a checkpoint of another library converted in memory."""
    _FOREIGN_LOADERS.append((claims, load_model))


def save(model, directory: str, metadata: dict | None = None) -> str:
    """Writes `model`'s preset to `directory` (replaced atomically). Returns the directory."""
    record = {
        "format_version": files.FORMAT_VERSION,
        "module": type(model).__module__,
        "class_name": type(model).__name__,
        "config": model.get_config(),
        "registered_name": keras.saving.get_registered_name(type(model)),
    }
    meta = dict(metadata or {})
    meta.update(
        format_version=files.FORMAT_VERSION,
        class_name=type(model).__name__,
        parameter_count=int(model.count_params()),
        keras_version=keras.__version__,
    )
    with files.atomic_directory(directory, overwrite=True) as tmp:
        # The model's weights only: a compiled model's optimizer state (Adam's two moments, twice
        # the weights) is training state, which presets do not carry.
        optimizer = getattr(model, "optimizer", None)
        saving_lib.save_weights_only(
            model, os.path.join(tmp, WEIGHTS_FILE), objects_to_skip=[optimizer] if optimizer is not None else None
        )
        files.atomic_write_json(os.path.join(tmp, CONFIG_FILE), record)
        files.atomic_write_json(os.path.join(tmp, METADATA_FILE), meta)
    return directory
