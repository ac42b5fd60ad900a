"""The scripts as installed commands (pyproject's [project.scripts]): their names in messages and
what `--help` shows when a script runs as one (used by `vqvae_tf.cli.run`)."""

from __future__ import annotations

import os
import re
import sys

# The scripts as installed commands (pyproject's [project.scripts]): module -> command.
COMMANDS = {
    "train.pipeline": "vqvae-pipeline",
    "train.train_vqvae": "vqvae-train",
    "train.export_codes": "vqvae-export-codes",
    "train.train_prior": "vqvae-train-prior",
    "train.sample": "vqvae-sample",
    "export.export_savedmodel": "vqvae-export-savedmodel",
    "export.export_tflite": "vqvae-export-tflite",
    "export.convert_checkpoint": "vqvae-convert-checkpoint",
}


def as_command_text(text: str) -> str:
    """`text` with ``python -m train.X`` / ``train.X`` spelled as the installed command
    (``vqvae-...``), when this process runs as one."""
    if command_name() is None:
        return text
    for module, command in COMMANDS.items():
        text = re.sub(rf"(python -m )?\b{re.escape(module)}\b", command, text)
    return text


def command_name() -> str | None:
    """The installed command running (vqvae-train, ...), or None under ``python -m``."""
    name = os.path.basename(sys.argv[0])
    return name if name in COMMANDS.values() else None


def prepare_help(main, FLAGS) -> None:
    """--help lists the script's own flags (defined through this module's define_* functions, so
    absl files them under vqvae_tf.cli) and, for an installed command, the script's docstring."""
    for module, module_flags in FLAGS.flags_by_module_dict().items():
        if module != sys.argv[0] and module.startswith(("vqvae_tf.", "train.", "export.")):
            for flag in module_flags:
                FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    main_module, script = sys.modules["__main__"], sys.modules.get(getattr(main, "__module__", ""))
    if not getattr(main_module, "__doc__", None) and script is not None and script.__doc__:
        main_module.__doc__ = as_command_text(script.__doc__)
