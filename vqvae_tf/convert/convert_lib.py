"""Converts the field's pretrained VQ tokenizers into presets: diffusers `VQModel` folders and
taming-transformers checkpoints become a `VQVAE` of the "taming" network with the zoo's VQ layer.

    python -m export.convert_checkpoint --checkpoint=SRC --output=PRESET_DIR [--config=YAML] [--license=...]

SRC: a diffusers VQModel folder (or a repository folder with a ``vqvae/`` one), a
taming-transformers ``.ckpt`` (its project .yaml beside it or given), or ``hf://org/name[/subfolder]``
(downloaded with huggingface_hub, an optional dependency, where there is a network).
PRESET_DIR/vqvae/ then loads with ``VQVAE.from_preset(PRESET_DIR)``; ``VQVAE.from_preset(SRC)``
converts a diffusers folder in memory. Weights keep their own license: `license` is recorded,
"unknown" unless given.
"""

from __future__ import annotations

import datetime
import os

from vqvae_tf.convert import sources, weights
from vqvae_tf.convert.errors import ConversionError

HF_PREFIX = "hf://"


def download(uri: str) -> str:
    """The local folder of ``hf://org/name[/subfolder]``, fetched with huggingface_hub."""
    parts = uri[len(HF_PREFIX) :].strip("/").split("/")
    if len(parts) < 2:
        raise ConversionError(f"{uri}: expected hf://org/name[/subfolder].")
    try:
        import huggingface_hub
    except ImportError as e:
        raise ConversionError(
            f"{uri} needs the optional package huggingface_hub (pip install huggingface_hub) and a network; "
            "or download the folder yourself and pass its path."
        ) from e
    repo, sub = "/".join(parts[:2]), "/".join(parts[2:])
    root = huggingface_hub.snapshot_download(repo, allow_patterns=[f"{sub}/*" if sub else "*"])
    return os.path.join(root, sub) if sub else root


def read_source(src: str, config: str | None = None, image_size: int | None = None) -> sources.Source:
    """The checkpoint at `src` (see the module docstring), read and mapped; ConversionError otherwise."""
    src = str(src)
    if src.startswith(HF_PREFIX):
        src = download(src)
    if os.path.isdir(src):
        for folder in (src, os.path.join(src, "vqvae")):
            if sources.is_diffusers_folder(folder):
                return sources.read_diffusers(folder, image_size)
        raise ConversionError(
            f"{src} is not a diffusers VQModel folder: no config.json with a _class_name in it or in {src}/vqvae."
        )
    if os.path.isfile(src):
        return sources.read_taming(src, config, image_size)
    raise ConversionError(f"--checkpoint {src} does not exist.")


def build(source: sources.Source):
    """The `VQVAE` of `source` with its weights."""
    from vqvae_tf.models.autoencoders.vqvae import VQVAE

    try:
        model = VQVAE(**source.arguments)
    except ValueError as e:
        raise ConversionError(f"{source.path}: its config makes no valid model: {e}") from e
    weights.assign(model, source.state, source.scheme, source.path)
    return model


def load(src: str, config: str | None = None, image_size: int | None = None):
    """`VQVAE` converted in memory from `src` (no files written)."""
    return build(read_source(src, config, image_size))


def is_foreign(name_or_dir) -> bool:
    """Whether `name_or_dir` is ``hf://...`` or a diffusers model folder (its config.json names a
    ``_class_name``; or that of its ``vqvae/``): what `VQVAE.from_preset` converts in memory."""
    name = str(name_or_dir)
    return name.startswith(HF_PREFIX) or any(
        sources.is_diffusers_folder(d) for d in (name, os.path.join(name, "vqvae"))
    )


def load_as(cls, name_or_dir):
    """`load`, for `VQVAE.from_preset`: a PresetError names what fails."""
    from vqvae_tf.models.presets import PresetError

    try:
        model = load(name_or_dir)
    except ConversionError as e:
        raise PresetError(str(e)) from e
    if not isinstance(model, cls):
        raise PresetError(f"{name_or_dir} converts to a {type(model).__name__}, not a {cls.__name__}.")
    return model


def metadata(source: sources.Source, model, license: str | None = None, command: str | None = None) -> dict:
    """What the preset records of where it came from."""
    from vqvae_tf.serving.export_presets_lib import git_commit

    return {
        "source": os.path.abspath(source.path),
        "source_format": source.kind,
        "source_config": source.config,
        **source.extra,
        "license": license or "unknown",
        "command": command,
        "commit": git_commit(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "image_shape": list(model.image_shape),
        "latent_shape": list(model.latent_shape),
        "num_embeddings": int(model.num_embeddings),
        "converted": True,
    }


def convert(src, output, config=None, license=None, image_size=None, command=None, overwrite=False) -> dict:
    """Writes the preset PRESET_DIR=`output` (output/vqvae/) of checkpoint `src`; nothing is left at
    `output` on failure. Returns its metadata."""
    from vqvae_tf.models import presets
    from vqvae_tf.utils import files

    if os.path.exists(output) and not overwrite:
        raise ConversionError(f"--output {output} exists already (pass --overwrite to replace it).")
    source = read_source(src, config, image_size)
    model = build(source)
    meta = metadata(source, model, license, command)
    with files.atomic_directory(output, overwrite=overwrite) as tmp:
        presets.save(model, os.path.join(tmp, "vqvae"), meta)
    return meta
