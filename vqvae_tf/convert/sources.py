"""The two checkpoint formats: a source's config -> `VQVAE` arguments, and its state dict.

- diffusers: a `VQModel` folder (config.json + diffusion_pytorch_model.safetensors).
- taming-transformers: a Lightning .ckpt with its project .yaml (model.params: embed_dim,
  n_embed, ddconfig).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os

from vqvae_tf.convert import weights
from vqvae_tf.convert.errors import ConversionError
from vqvae_tf.convert.safetensors_file import read_safetensors
from vqvae_tf.convert.torch_checkpoint import read_torch_checkpoint, state_dict_of

DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"
DOWN_BLOCKS = {"DownEncoderBlock2D": False, "AttnDownEncoderBlock2D": True}
UP_BLOCKS = {"UpDecoderBlock2D": False, "AttnUpDecoderBlock2D": True}
# VQModel's config keys that change nothing here: bookkeeping, the diffusion latent scale, the
# training resolution (`sample_size` is the default image size), how decode() looks up codes.
DIFFUSERS_IGNORED = {
    "_class_name", "_diffusers_version", "_name_or_path", "_use_default_values", "sample_size",
    "scaling_factor", "force_upcast", "lookup_from_codebook",
}  # fmt: skip
DIFFUSERS_OPTIONS = {
    "in_channels", "out_channels", "down_block_types", "up_block_types", "block_out_channels",
    "layers_per_block", "act_fn", "latent_channels", "num_vq_embeddings", "norm_num_groups",
    "vq_embed_dim", "norm_type", "mid_block_add_attention",
}  # fmt: skip
TAMING_DDCONFIG = {
    "double_z", "z_channels", "resolution", "in_channels", "out_ch", "ch", "ch_mult", "num_res_blocks",
    "attn_resolutions", "dropout", "resamp_with_conv",
}  # fmt: skip
TAMING_IGNORED_PARAMS = {"lossconfig", "ckpt_path", "ignore_keys", "image_key", "colorize_nlabels", "monitor"}


@dataclasses.dataclass
class Source:
    """A checkpoint read and understood: the `VQVAE` arguments, its state dict and key scheme."""

    kind: str  # "diffusers" or "taming"
    path: str
    config: dict  # the source's own config, as it was read (recorded in the preset)
    arguments: dict  # VQVAE(**arguments)
    state: dict  # {key: np.ndarray}
    scheme: weights.KeyScheme
    extra: dict = dataclasses.field(default_factory=dict)  # e.g. the training step


def _vqvae_arguments(channels, image_size, num_embeddings, embedding_dim, options) -> dict:
    return dict(
        image_shape=(image_size, image_size, channels),
        num_embeddings=int(num_embeddings),
        embedding_dim=int(embedding_dim),
        downsample=2 ** (len(options["block_out_channels"]) - 1),
        network="taming",
        network_options=options,
        quantizer="vq",
        commitment_cost=0.25,
        likelihood="mse",
    )


def is_diffusers_folder(path: str) -> bool:
    """Whether `path` is a folder with a diffusers config.json naming a `_class_name`."""
    config = os.path.join(str(path), "config.json")
    if not os.path.isfile(config):
        return False
    try:
        with open(config) as f:
            return "_class_name" in json.load(f)
    except (ValueError, OSError):
        return False


def read_diffusers(folder: str, image_size: int | None = None) -> Source:
    """A diffusers `VQModel` folder; every option its config can hold is mapped or refused by name."""
    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        raise ConversionError(f"{folder} has no config.json: not a diffusers model folder.")
    with open(config_path) as f:
        try:
            config = json.load(f)
        except ValueError as e:
            raise ConversionError(f"{config_path} is not valid JSON: {e}") from e
    if config.get("_class_name") != "VQModel":
        raise ConversionError(f"{folder} holds a diffusers {config.get('_class_name')!r}, not a VQModel.")
    unknown = sorted(set(config) - DIFFUSERS_OPTIONS - DIFFUSERS_IGNORED)
    if unknown:
        raise ConversionError(
            f"{config_path}: option {unknown[0]!r} is not supported (known: {sorted(DIFFUSERS_OPTIONS)})."
        )
    get = lambda key, default: config.get(key, default)  # noqa: E731  (VQModel's defaults)
    if get("act_fn", "silu") not in ("silu", "swish"):
        raise ConversionError(f"{config_path}: act_fn={get('act_fn', 'silu')!r} is not supported (silu only).")
    channels = list(get("block_out_channels", [64]))
    blocks = {"down_block_types": DOWN_BLOCKS, "up_block_types": UP_BLOCKS}
    attention = {}
    for key, known in blocks.items():
        types = list(get(key, ["DownEncoderBlock2D"] if key.startswith("down") else ["UpDecoderBlock2D"]))
        bad = [t for t in types if t not in known]
        if bad:
            raise ConversionError(f"{config_path}: {key} entry {bad[0]!r} is not supported (known: {sorted(known)}).")
        if len(types) != len(channels):
            raise ConversionError(
                f"{config_path}: {key} has {len(types)} entries for {len(channels)} block_out_channels."
            )
        attention[key] = [known[t] for t in types]
    in_channels, out_channels = get("in_channels", 3), get("out_channels", 3)
    if in_channels != out_channels:
        raise ConversionError(f"{config_path}: in_channels={in_channels} and out_channels={out_channels} differ.")
    latent = get("latent_channels", 3)
    options = dict(
        block_out_channels=channels,
        layers_per_block=get("layers_per_block", 1),
        down_attention=attention["down_block_types"],
        up_attention=attention["up_block_types"],
        mid_attention=get("mid_block_add_attention", True),
        norm_num_groups=get("norm_num_groups", 32),
        norm_eps=1e-6,
        latent_channels=latent,
        norm_type=get("norm_type", "group"),
    )
    size = image_size or get("sample_size", 32)
    size = size[0] if isinstance(size, (list, tuple)) else size
    arguments = _vqvae_arguments(
        in_channels, int(size), get("num_vq_embeddings", 256), get("vq_embed_dim", None) or latent, options
    )
    path = os.path.join(folder, DIFFUSERS_WEIGHTS)
    if not os.path.isfile(path):
        if os.path.isfile(os.path.join(folder, "diffusion_pytorch_model.bin")):
            raise ConversionError(
                f"{folder} has only diffusion_pytorch_model.bin: save it as {DIFFUSERS_WEIGHTS} first "
                "(diffusers: VQModel.from_pretrained(folder).save_pretrained(folder, safe_serialization=True))."
            )
        found = sorted(os.path.basename(f) for f in glob.glob(os.path.join(folder, "*.safetensors")))
        raise ConversionError(f"{folder} has no {DIFFUSERS_WEIGHTS} (found {found}).")
    state = read_safetensors(path)
    return Source("diffusers", folder, config, arguments, state, weights.diffusers_scheme(state))


def read_taming(checkpoint: str, config_path: str | None = None, image_size: int | None = None) -> Source:
    """A taming-transformers checkpoint and its project .yaml (beside it when `config_path` is None)."""
    import yaml  # (PyYAML: requirements.txt; BUILD.md says why)

    if config_path is None:
        found = sorted(glob.glob(os.path.join(os.path.dirname(os.path.abspath(checkpoint)), "*.yaml")))
        if len(found) != 1:
            raise ConversionError(
                f"Pass --config=the project .yaml of {checkpoint}: {len(found)} .yaml files beside it."
            )
        config_path = found[0]
    with open(config_path) as f:
        try:
            config = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ConversionError(f"{config_path} is not valid YAML: {e}") from e
    model = (config or {}).get("model", {})
    target, params = model.get("target", ""), model.get("params", {})
    if not target.endswith(".VQModel") or "ddconfig" not in params:
        raise ConversionError(
            f"{config_path}: model.target {target!r} is not supported (taming.models.vqgan.VQModel with "
            "model.params.ddconfig; Gumbel and EMA variants are not converted)."
        )
    unknown = sorted(set(params) - {"embed_dim", "n_embed", "ddconfig"} - TAMING_IGNORED_PARAMS)
    if unknown:
        raise ConversionError(f"{config_path}: model.params.{unknown[0]} is not supported.")
    dd = params["ddconfig"]
    unknown = sorted(set(dd) - TAMING_DDCONFIG)
    if unknown:
        raise ConversionError(f"{config_path}: ddconfig.{unknown[0]} is not supported.")
    if dd.get("double_z", True) or not dd.get("resamp_with_conv", True):
        raise ConversionError(f"{config_path}: ddconfig double_z must be false and resamp_with_conv true (a VQGAN's).")
    mult = list(dd["ch_mult"])
    if mult[0] != 1:
        raise ConversionError(f"{config_path}: ddconfig.ch_mult must start with 1, got {mult}.")
    if dd["in_channels"] != dd["out_ch"]:
        raise ConversionError(f"{config_path}: ddconfig in_channels and out_ch differ.")
    resolution, n = int(dd["resolution"]), len(mult)
    attention = [resolution // 2**i in dd["attn_resolutions"] for i in range(n)]
    options = dict(
        block_out_channels=[dd["ch"] * m for m in mult],
        layers_per_block=dd["num_res_blocks"],
        down_attention=attention,
        up_attention=attention[::-1],
        mid_attention=True,
        norm_num_groups=32,
        norm_eps=1e-6,
        latent_channels=dd["z_channels"],
        norm_type="group",
    )
    arguments = _vqvae_arguments(
        dd["in_channels"], image_size or resolution, params["n_embed"], params["embed_dim"], options
    )
    ckpt = read_torch_checkpoint(checkpoint)
    step = ckpt.get("global_step") if isinstance(ckpt, dict) else None
    extra = {"global_step": int(step)} if isinstance(step, int) else {}
    return Source("taming", checkpoint, config, arguments, state_dict_of(ckpt, checkpoint), weights.TAMING, extra)
