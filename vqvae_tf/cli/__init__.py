"""Flags shared by the scripts in train/ and export/, each defined once (as tensorflow-models'
`official/common/flags.py`), and the one way a script's flags become `RunOptions`; `runner.run`
(re-exported as `cli.run`) runs a script's main.

A script keeps module-level holders (``_RUN = cli.define_run_flags(...)``), validates through absl
(``lower_bound``, ``DEFINE_enum``; a validator only where absl has no bound: strict ``> 0`` for
floats, odd kernels, comma lists), and hands one library call to `cli.run`.
"""

from __future__ import annotations

import dataclasses
import sys

from absl import app, flags

from vqvae_tf.configs import CONFIG_NAMES, DEFAULT_CONFIGS, LR_SCHEDULES, MODELS
from vqvae_tf.data import DataError, DataSource
from vqvae_tf.layers.quantizers import option_fields, registry
from vqvae_tf.losses.objective import PERCEPTUAL_NETS, RECONSTRUCTION_LOSSES, ImageLossConfig
from vqvae_tf.models.presets import PRESETS
from vqvae_tf.serving import tflite
from vqvae_tf.training.options import MIXED_PRECISION, STRATEGIES, RunOptions
from vqvae_tf.utils import flag_parsers

FLAGS = flags.FLAGS


def positive_float(name: str) -> None:
    """Registers `--name` > 0 (an unset flag passes)."""
    flags.register_validator(name, lambda v: v is None or v > 0, message=f"--{name} must be > 0.")


_WORKDIR_HELP = "Run directory (checkpoints, logs, metrics, pictures)."


def define_workdir(help_text: str = _WORKDIR_HELP) -> flags.FlagHolder:
    return flags.DEFINE_string("workdir", None, help_text, required=True)


def define_model_source(workdir_help: str) -> tuple:
    """--workdir (a trained run) and --preset (a pretrained preset: a shipped name or a preset
    directory), exactly one of them. Returns the two holders."""
    workdir = flags.DEFINE_string("workdir", None, workdir_help)
    preset = flags.DEFINE_string(
        "preset", None, f"A pretrained preset instead of --workdir: {', '.join(PRESETS)} or a preset directory."
    )
    flags.register_multi_flags_validator(
        ["workdir", "preset"],
        lambda values: bool(values["workdir"]) != bool(values["preset"]),
        message="Give exactly one of --workdir (a trained run) and --preset (a pretrained preset).",
    )
    return workdir, preset


def _data_field(name: str):
    return next(f for f in dataclasses.fields(DataSource) if f.name == name)


def define_data_dir() -> flags.FlagHolder:
    """--data_dir alone (the export scripts), as `define_data_flags` defines it."""
    return flags.DEFINE_string("data_dir", None, _data_field("data_dir").metadata["help"])


def define_data_flags(dataset_help: str | None = None) -> dict:
    """One flag per `DataSource` field (--dataset for ``name``, --data_dir, --image_size,
    --channels, --test_fraction, --skip_corrupt_images), its help from the field. They only
    parse: `DataSource` validates (`RunFlags.options` names the flag). Returns {field: holder}."""
    holders = {}
    for field in dataclasses.fields(DataSource):
        flag, help_text = field.metadata.get("flag", field.name), field.metadata["help"]
        if field.name == "name" and dataset_help:
            help_text = dataset_help
        if "choices" in field.metadata:
            holders[field.name] = flags.DEFINE_enum(flag, None, list(field.metadata["choices"]), help_text)
        elif isinstance(field.default, bool):
            holders[field.name] = flags.DEFINE_bool(flag, field.default, help_text)
        elif isinstance(field.default, float):
            holders[field.name] = flags.DEFINE_float(flag, field.default, help_text)
        else:
            holders[field.name] = flags.DEFINE_string(flag, None, help_text)
    return holders


def data_values(holders: dict, only_present: bool = False) -> dict:
    """The `DataSource` fields of parsed `define_data_flags` holders (`only_present`: only those
    given on the command line)."""
    values = {name: holder.value for name, holder in holders.items() if holder.present or not only_present}
    if values.get("channels") is not None:
        values["channels"] = int(values["channels"])
    return values


def data_source(holders: dict, only_present: bool = False) -> DataSource:
    """The `DataSource` of parsed data flags; a value it refuses is a usage error naming the flag."""
    values = data_values(holders, only_present)
    try:
        return DataSource(**values)
    except DataError as e:
        named = [
            f"--{holders[n].name}={values[n]}"
            for n in values
            if values[n] is not None and n in str(e) and f"--{holders[n].name}" not in str(e)
        ]
        raise app.UsageError(f"{' '.join(named) + ': ' if named else ''}{e}") from e


@dataclasses.dataclass
class RunFlags:
    """Holders of the flags that make a `RunOptions` (`log_every` / `checkpoint_every` only for
    the scripts that train: see `define_cadence_flags`)."""

    workdir: flags.FlagHolder
    strategy: flags.FlagHolder
    mixed_precision: flags.FlagHolder
    seed: flags.FlagHolder
    data: dict
    cadence: dict = dataclasses.field(default_factory=dict)

    def options(self, **fields) -> RunOptions:
        """The `RunOptions` of the parsed flags (plus `fields`); flags.txt gets every project flag's value."""
        holders = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("data", "cadence")}
        values = {name: holder.value for name, holder in {**holders, **self.cadence}.items()}
        data = data_source(self.data)
        return RunOptions(**values, data=data, flags_text=project_flags_text(), **fields)


def define_quantization_flag(default: str = "all") -> flags.FlagHolder:
    """--quantization: a comma list of TFLite quantizations, or 'all' (`quantizations` reads it).
    A validator checks it (DEFINE_multi_enum would need the flag repeated)."""
    holder = flags.DEFINE_list("quantization", [default], f"Any of {', '.join(tflite.QUANTIZATIONS)}, or 'all'.")
    flags.register_validator(
        "quantization",
        lambda qs: all(q in tflite.QUANTIZATIONS + ("all",) for q in qs),
        message=f"--quantization must be from {', '.join(tflite.QUANTIZATIONS)} or 'all'.",
    )
    return holder


def quantizations(holder: flags.FlagHolder) -> tuple:
    """The quantizations a `define_quantization_flag` holder names, in order, without repeats."""
    return tflite.QUANTIZATIONS if "all" in holder.value else tuple(dict.fromkeys(holder.value))


def project_flags_text() -> str:
    """The values of the script's own flags and of this module's, one ``--flag=value`` per line
    (what ``--flagfile`` reads): not absl's, TensorFlow's or absltest's (``--test_tmpdir``, ...)."""
    lines = []
    for module, module_flags in FLAGS.flags_by_module_dict().items():
        if module == sys.argv[0] or module.startswith(("vqvae_tf.", "train.", "export.")):
            lines += [text for text in (flag.serialize() for flag in module_flags) if text]
    return "\n".join(lines) + "\n"


def define_run_flags(
    workdir_help: str = _WORKDIR_HELP, cadence: dict | None = None, dataset_help: str | None = None
) -> RunFlags:
    """--workdir, the data flags (`define_data_flags`), --strategy, --mixed_precision, --seed
    (+ `cadence` holders)."""
    return RunFlags(
        workdir=define_workdir(workdir_help),
        data=define_data_flags(*([dataset_help] if dataset_help else [])),
        strategy=flags.DEFINE_enum("strategy", "default", list(STRATEGIES), "tf.distribute strategy."),
        mixed_precision=flags.DEFINE_enum(
            "mixed_precision",
            "auto",
            list(MIXED_PRECISION),
            "Keras dtype policy; auto: mixed_bfloat16 where the CPU has bf16 instructions and a short probe of "
            "the autoencoder's step shows it faster, in runs of 1000 steps or more (the choice is logged and noted "
            "in flags.txt; a resumed run keeps it; the priors train in float32).",
        ),
        seed=define_seed_flag(),
        cadence=cadence or {},
    )


def define_cadence_flags(log_every: int, checkpoint_every: int) -> dict:
    """--log_every and --checkpoint_every (steps), for the scripts that train."""
    return {
        "log_every": flags.DEFINE_integer(
            "log_every", log_every, "Steps between progress lines / TensorBoard scalars.", lower_bound=1
        ),
        "checkpoint_every": flags.DEFINE_integer(
            "checkpoint_every", checkpoint_every, "Steps between checkpoints.", lower_bound=1
        ),
    }


def define_optimization_flags(steps: bool = True, batch_help: str = "") -> dict:
    """--steps (unless `steps` is False), --batch_size, --learning_rate, --lr_schedule; unset ones
    keep the config's value (a batch larger than a small training split is lowered to it, saying so)."""
    holders = {}
    if steps:
        holders["steps"] = flags.DEFINE_integer(
            "steps", None, "Total training steps (default: the config's).", lower_bound=1
        )
    holders |= {
        "batch_size": flags.DEFINE_integer(
            "batch_size",
            None,
            "Global batch size (default: the config's, or the number of training images if fewer)." + batch_help,
            lower_bound=1,
        ),
        "learning_rate": flags.DEFINE_float("learning_rate", None, "Adam learning rate, > 0 (default: the config's)."),
        "lr_schedule": flags.DEFINE_enum(
            "lr_schedule", None, list(LR_SCHEDULES), "Learning-rate schedule (default: the config's)."
        ),
    }
    return holders


def define_loss_flags() -> dict:
    """The autoencoder's training losses (`losses.objective.ImageLossConfig`'s fields: L1, LPIPS,
    the PatchGAN discriminator); unset ones keep the config's value."""
    return {
        "reconstruction_loss": flags.DEFINE_enum(
            "reconstruction_loss",
            None,
            list(RECONSTRUCTION_LOSSES),
            "mse: the model's likelihood term (MSE / data variance); l1: mean |x - x_hat| on [-1, 1] (VQGAN). "
            "Default: the config's.",
        ),
        "perceptual_weight": flags.DEFINE_float(
            "perceptual_weight", None, "Weight of the LPIPS loss, >= 0 (VQGAN: 1.0; default: the config's)."
        ),
        "perceptual_net": flags.DEFINE_enum(
            "perceptual_net", None, list(PERCEPTUAL_NETS), "LPIPS backbone in training (default: the config's, alex)."
        ),
        "adversarial_weight": flags.DEFINE_float(
            "adversarial_weight",
            None,
            "Weight of the PatchGAN hinge loss, times VQGAN's adaptive weight; 0 trains no discriminator "
            "(VQGAN: 0.8; default: the config's).",
        ),
        "perceptual_start": flags.DEFINE_integer(
            "perceptual_start",
            None,
            "Steps on the reconstruction term alone before LPIPS acts (about 7x a plain step at 64 px on VGG, on a CPU; "
            "default: the config's).",
        ),
        "disc_layers": flags.DEFINE_integer("disc_layers", None, "Stride-2 layers of the discriminator (default 3)."),
        "disc_filters": flags.DEFINE_integer("disc_filters", None, "Width of its first layer (default 64)."),
        "disc_start": flags.DEFINE_integer(
            "disc_start", None, "Steps before the discriminator acts and learns (default: the config's)."
        ),
        "disc_learning_rate": flags.DEFINE_float(
            "disc_learning_rate", None, "The discriminator's Adam learning rate (default: --learning_rate)."
        ),
    }


def define_jit_compile_flag(flag_values=flags.FLAGS):
    """--jit_compile (XLA on), --nojit_compile (off) or --jit_compile=auto (time a few steps each
    way on this machine and keep the faster); unset keeps the config's."""
    return flags.DEFINE_flag(
        flag_parsers.JitCompileFlag(
            flag_parsers.JitCompileParser(),
            flags.ArgumentSerializer(),
            "jit_compile",
            None,
            "XLA-compile the train step: true, false, or auto (decide by timing a few steps each way on "
            "this machine). Default: the config's (false).",
            boolean=True,
        ),
        flag_values,
    )


def _define_option_flag(option) -> flags.FlagHolder:
    """The flag of a quantizer `registry.Option` (unset: None, the config's value stays)."""
    if option.type == "int_list":
        return flags.DEFINE(
            flag_parsers.IntListParser(), option.field, None, option.help, serializer=flags.CsvListSerializer(",")
        )
    if option.type == "str" and option.choices:
        return flags.DEFINE_enum(option.field, None, list(option.choices), option.help)
    define = {"int": flags.DEFINE_integer, "float": flags.DEFINE_float, "bool": flags.DEFINE_bool}
    return define.get(option.type, flags.DEFINE_string)(option.field, None, option.help)


def define_quantizer_flags() -> dict:
    """--quantizer (the registered names) and one flag per registered option (--fsq_levels,
    --num_quantizers, --entropy_weight, ...: `registry.option_fields()`), plus --num_embeddings and
    --embedding_dim: the quantizer fields of a config; unset ones keep the config's value. They
    only parse: the config and the quantizer layer validate (`override` names the flag)."""
    listed = "; ".join(f"{e.name}: {e.help}" for e in registry.entries())
    holders = {
        "quantizer": flags.DEFINE_enum("quantizer", None, list(registry.names()), f"{listed}. Default: the config's."),
        "num_embeddings": flags.DEFINE_integer("num_embeddings", None, "K: codes (default: the config's)."),
        "embedding_dim": flags.DEFINE_integer(
            "embedding_dim", None, "D: channels of a code vector (LFQ/BSQ: bits, K = 2^D; default: the config's)."
        ),
    }
    for option in option_fields().values():
        holders[option.field] = _define_option_flag(option)
    return holders


def define_config_flag(help_text: str) -> flags.FlagHolder:
    """--config: a named autoencoder config (`configs.CONFIG_NAMES`); unset: the script's default."""
    return flags.DEFINE_enum("config", None, list(CONFIG_NAMES), help_text)


def define_init_from_flag(help_text: str) -> flags.FlagHolder:
    """--init_from: a pretrained preset (a shipped name or a preset directory) to fine-tune from."""
    return flags.DEFINE_string("init_from", None, help_text)


def define_seed_flag() -> flags.FlagHolder:
    return flags.DEFINE_integer("seed", 0, "Random seed.")


def define_model_flag() -> flags.FlagHolder:
    """--model: vqvae or vqvae2 (default: the --config's model, or vqvae)."""
    return flags.DEFINE_enum(
        "model",
        None,
        list(MODELS),
        "vqvae: VQ-VAE (one code grid); vqvae2: VQ-VAE-2 (top and bottom grids). Default: the --config's "
        f"model; without --config, {', '.join(f'{m}: {c}' for m, c in DEFAULT_CONFIGS.items())}.",
    )


def override(config, holders: dict):
    """`config` with every set flag of `holders` ({field: holder}) applied, validated. A set flag
    that is no field of this config (e.g. --quantizer for a VQ-VAE-2), a value the config or a
    layer refuses, or one that the config's other fields overrule (--embedding_dim with FSQ's
    levels) is a usage error naming the flags."""
    fields = {f.name for f in dataclasses.fields(config)}
    given = {}
    for name, holder in holders.items():
        if holder.value is not None:
            if name not in fields:
                raise app.UsageError(f"--{name} does not apply to the {config.model} config {config.name!r}.")
            setattr(config, name, holder.value)
            given[name] = holder.value
    quantizer = getattr(config, "quantizer", None)
    if isinstance(quantizer, str) and quantizer in registry.names():
        # A flag given for another quantizer's option is refused even at its default value.
        for name, value in given.items():
            if name in option_fields() and name not in registry.get(quantizer).fields:
                raise app.UsageError(registry.not_applicable(name, f"--{name}={_flag_text(value)}", quantizer))
    try:
        # An autoencoder's image size comes from the data later (fit_to_data checks the losses' minimum then).
        config.validate(check_image_size=False) if isinstance(config, ImageLossConfig) else config.validate()
    except (TypeError, ValueError) as e:
        named = [n for n in given if n in str(e)] or list(given)
        flags_text = " ".join(f"--{n}={_flag_text(given[n])}" for n in named)
        raise app.UsageError(f"{flags_text + ': ' if flags_text else ''}{e}") from e
    for name, value in given.items():
        if getattr(config, name) != value and not (isinstance(value, tuple) and tuple(getattr(config, name)) == value):
            raise app.UsageError(
                f"--{name}={_flag_text(value)} does not apply: the config's other fields make it "
                f"{getattr(config, name)!r} (e.g. FSQ's levels fix K and D)."
            )
    return config


def _flag_text(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


# The scripts' process runner (one-line errors, exit status 2): runner.py.
from vqvae_tf.cli.runner import TRACEBACK_ENV as TRACEBACK_ENV  # noqa: E402
from vqvae_tf.cli.runner import USER_ERRORS as USER_ERRORS  # noqa: E402
from vqvae_tf.cli.runner import run as run  # noqa: E402
