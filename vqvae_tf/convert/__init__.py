"""Pretrained tokenizers from PyTorch: diffusers `VQModel` folders and taming-transformers
checkpoints converted into presets (`convert_lib`), read without torch (`safetensors_file`,
`torch_checkpoint`'s restricted unpickler), mapped by `sources` and `weights`.

Importing it (`vqvae_tf` does) lets ``VQVAE.from_preset`` take a diffusers folder or an
``hf://`` address, converted in memory."""

from vqvae_tf.convert.convert_lib import convert, is_foreign, load, load_as, read_source
from vqvae_tf.convert.errors import ConversionError
from vqvae_tf.models import presets as _presets

_presets.register_foreign_loader(is_foreign, load_as)

__all__ = ["ConversionError", "convert", "is_foreign", "load", "load_as", "read_source"]
