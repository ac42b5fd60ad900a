r"""Converts a pretrained VQ tokenizer of PyTorch into a preset (library: vqvae_tf.convert).

    python -m export.convert_checkpoint --checkpoint=path/to/vqmodel_folder --output=/tmp/ldm_f8
    python -m export.convert_checkpoint --checkpoint=last.ckpt --config=model.yaml --output=/tmp/vqgan_f16
    python -m export.convert_checkpoint --checkpoint=hf://org/name/vqvae --output=/tmp/tok --license=...

--checkpoint: a diffusers VQModel folder (config.json + diffusion_pytorch_model.safetensors, or a
repository folder with a vqvae/ one), a taming-transformers .ckpt (its project .yaml beside it, or
--config), or hf://org/name[/subfolder] (needs huggingface_hub and a network). Writes
OUTPUT/vqvae/, which loads with VQVAE.from_preset(OUTPUT) and exports with
export.export_savedmodel / export.export_tflite --preset=OUTPUT. Weights keep their own license.
"""

import shlex
import sys

from absl import flags

from vqvae_tf import cli
from vqvae_tf.convert import convert_lib
from vqvae_tf.utils import progress

_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", None, "The diffusers folder, taming .ckpt or hf:// address.", required=True
)
_OUTPUT = flags.DEFINE_string("output", None, "The preset directory to write (PRESET_DIR).", required=True)
_CONFIG = flags.DEFINE_string("config", None, "A taming checkpoint's project .yaml (default: the one beside it).")
_LICENSE = flags.DEFINE_string("license", None, "The weights' license, recorded in metadata.json (default: unknown).")
_IMAGE_SIZE = flags.DEFINE_integer(
    "image_size",
    None,
    "The image size the preset takes (default: the source's sample_size / resolution).",
    lower_bound=1,
)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing --output.")


def main():
    meta = convert_lib.convert(
        _CHECKPOINT.value,
        _OUTPUT.value,
        config=_CONFIG.value,
        license=_LICENSE.value,
        image_size=_IMAGE_SIZE.value,
        command=shlex.join(["python", "-m", "export.convert_checkpoint", *sys.argv[1:]]),
        overwrite=_OVERWRITE.value,
    )
    h, w = meta["latent_shape"]
    progress.log(
        f"Converted {meta['source_format']} checkpoint {_CHECKPOINT.value}: {meta['image_shape'][0]}x"
        f"{meta['image_shape'][1]} images -> {h}x{w} codes of {meta['num_embeddings']}; preset in {_OUTPUT.value} "
        f"(license: {meta['license']})."
    )


def run():
    """The installed command (pyproject's [project.scripts])."""
    cli.run(main)


if __name__ == "__main__":
    run()
