"""Puts a PyTorch state dict into a `VQVAE` of the "taming" network: every variable named by the
source's key scheme, transposed to Keras' layout, shape-checked; no key missing, none left over.

A key scheme (`DIFFUSERS`, `TAMING`, `diffusers_legacy`) names the parts of the network the way the
source's modules do; `pairs` walks the Keras network (`vqvae_tf.layers.taming`) and asks the
scheme for each weight's key.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from vqvae_tf.convert.errors import ConversionError


@dataclasses.dataclass(frozen=True)
class KeyScheme:
    name: str
    down_block: str  # .format(i=level, j=block)
    down_attention: str
    downsample: str
    up_block: str  # .format(i=up block index in the decoder's order, level=its level, j=block)
    up_attention: str
    upsample: str
    mid_blocks: tuple  # (first, second)
    mid_attention: str
    norm_out: str
    shortcut: str
    attention_norm: tuple  # (group norm, spatial norm)
    attention_parts: tuple  # q, k, v, output projection
    attention_kernels: str  # "linear" ([out, in]) or "conv1x1" ([out, in, 1, 1])
    spatial_group: str = "norm_layer"  # SpatialNorm's GroupNorm
    ignored_prefixes: tuple = ()


DIFFUSERS = KeyScheme(
    name="diffusers",
    down_block="encoder.down_blocks.{i}.resnets.{j}",
    down_attention="encoder.down_blocks.{i}.attentions.{j}",
    downsample="encoder.down_blocks.{i}.downsamplers.0.conv",
    up_block="decoder.up_blocks.{i}.resnets.{j}",
    up_attention="decoder.up_blocks.{i}.attentions.{j}",
    upsample="decoder.up_blocks.{i}.upsamplers.0.conv",
    mid_blocks=("{side}.mid_block.resnets.0", "{side}.mid_block.resnets.1"),
    mid_attention="{side}.mid_block.attentions.0",
    norm_out="{side}.conv_norm_out",
    shortcut="conv_shortcut",
    attention_norm=("group_norm", "spatial_norm"),
    attention_parts=("to_q", "to_k", "to_v", "to_out.0"),
    attention_kernels="linear",
)
# diffusers before 0.14 named the attention's weights after the original AttentionBlock (its
# loader still converts them): checkpoints saved then carry these names.
DIFFUSERS_LEGACY = dataclasses.replace(
    DIFFUSERS, name="diffusers (legacy attention names)", attention_parts=("query", "key", "value", "proj_attn")
)
TAMING = KeyScheme(
    name="taming-transformers",
    down_block="encoder.down.{i}.block.{j}",
    down_attention="encoder.down.{i}.attn.{j}",
    downsample="encoder.down.{i}.downsample.conv",
    up_block="decoder.up.{level}.block.{j}",
    up_attention="decoder.up.{level}.attn.{j}",
    upsample="decoder.up.{level}.upsample.conv",
    mid_blocks=("{side}.mid.block_1", "{side}.mid.block_2"),
    mid_attention="{side}.mid.attn_1",
    norm_out="{side}.norm_out",
    shortcut="nin_shortcut",
    attention_norm=("norm", None),
    attention_parts=("q", "k", "v", "proj_out"),
    attention_kernels="conv1x1",
    ignored_prefixes=("loss.",),  # the discriminator and LPIPS of a training checkpoint
)


def diffusers_scheme(state: dict) -> KeyScheme:
    """DIFFUSERS, or DIFFUSERS_LEGACY where the state dict has the old attention names."""
    return DIFFUSERS_LEGACY if any(".query.weight" in k for k in state) else DIFFUSERS


def pairs(model, scheme: KeyScheme) -> list:
    """[(variable, key, kind)] for every weight of `model` (a VQVAE of the "taming" network);
    kind is how the source stores it: "conv", "linear", "conv1x1" or "same"."""
    out = []

    def add(variable, key, kind="same"):
        out.append((variable, key, kind))

    def conv(layer, key):
        add(layer.kernel, f"{key}.weight", "conv")
        add(layer.bias, f"{key}.bias")

    def group(layer, key):
        add(layer.gamma, f"{key}.weight")
        add(layer.beta, f"{key}.bias")

    def norm(layer, key):
        if layer.spatial:
            group(layer.norm, f"{key}.{scheme.spatial_group}")
            conv(layer.conv_y, f"{key}.conv_y")
            conv(layer.conv_b, f"{key}.conv_b")
        else:
            group(layer.norm, key)

    def block(layer, key):
        norm(layer.norm1, f"{key}.norm1")
        conv(layer.conv1, f"{key}.conv1")
        norm(layer.norm2, f"{key}.norm2")
        conv(layer.conv2, f"{key}.conv2")
        if layer.shortcut is not None:
            conv(layer.shortcut, f"{key}.{scheme.shortcut}")

    def attention(layer, key):
        norm_name = scheme.attention_norm[1 if layer.norm.spatial else 0]
        if norm_name is None:
            raise ConversionError(f"{scheme.name} checkpoints have no spatial-norm attention.")
        norm(layer.norm, f"{key}.{norm_name}")
        for dense, name in zip((layer.q, layer.k, layer.v, layer.proj), scheme.attention_parts):
            add(dense.kernel, f"{key}.{name}.weight", scheme.attention_kernels)
            add(dense.bias, f"{key}.{name}.bias")

    def middle(layer, side):
        block(layer.block1, scheme.mid_blocks[0].format(side=side))
        if layer.attention is not None:
            attention(layer.attention, scheme.mid_attention.format(side=side))
        block(layer.block2, scheme.mid_blocks[1].format(side=side))

    def level(layer, names, **where):
        for j, b in enumerate(layer.blocks):
            block(b, names[0].format(j=j, **where))
            if layer.attentions:
                attention(layer.attentions[j], names[1].format(j=j, **where))
        if layer.conv is not None:
            conv(layer.conv, names[2].format(**where))

    enc, dec = model.encoder, model.decoder
    conv(enc.conv_in, "encoder.conv_in")
    for i, lv in enumerate(enc.levels):
        level(lv, (scheme.down_block, scheme.down_attention, scheme.downsample), i=i)
    middle(enc.middle, "encoder")
    norm(enc.norm_out, scheme.norm_out.format(side="encoder"))
    conv(enc.conv_out, "encoder.conv_out")
    conv(enc.quant_conv, "quant_conv")
    add(model.quantizer.codebook_variable, "quantize.embedding.weight")
    conv(dec.post_quant_conv, "post_quant_conv")
    conv(dec.conv_in, "decoder.conv_in")
    middle(dec.middle, "decoder")
    n = len(dec.levels)
    for i, lv in enumerate(dec.levels):
        level(lv, (scheme.up_block, scheme.up_attention, scheme.upsample), i=i, level=n - 1 - i)
    norm(dec.norm_out, scheme.norm_out.format(side="decoder"))
    conv(dec.conv_out, "decoder.conv_out")
    return out


def _to_keras(value: np.ndarray, kind: str) -> np.ndarray:
    if kind == "conv" and value.ndim == 4:  # [out, in, kh, kw] -> [kh, kw, in, out]
        return value.transpose(2, 3, 1, 0)
    if kind == "linear" and value.ndim == 2:  # [out, in] -> [in, out]
        return value.T
    if kind == "conv1x1" and value.ndim == 4 and value.shape[2:] == (1, 1):
        return value[:, :, 0, 0].T
    return value


def assign(model, state: dict, scheme: KeyScheme, source: str) -> None:
    """Sets every weight of `model` from `state` ({key: array}); a ConversionError names the first
    missing key, a shape that does not fit, or the keys `state` has beyond the model's."""
    todo = pairs(model, scheme)
    missing = [key for _, key, _ in todo if key not in state]
    if missing:
        raise ConversionError(
            f"{source} has no weight {missing[0]!r} ({len(missing)} missing) that a {scheme.name} model of "
            "this config has: the checkpoint does not match its config."
        )
    used = {key for _, key, _ in todo}
    extra = sorted(k for k in state if k not in used and not k.startswith(scheme.ignored_prefixes))
    if extra:
        raise ConversionError(
            f"{source} has weights this config does not make ({len(extra)}, e.g. {extra[0]!r}): "
            "a config that does not match the checkpoint, or an option not supported."
        )
    values = []
    for variable, key, kind in todo:
        value = _to_keras(np.asarray(state[key], np.float32), kind)
        if tuple(value.shape) != tuple(variable.shape):
            raise ConversionError(
                f"{source}: weight {key!r} has shape {list(np.asarray(state[key]).shape)}, which does not fit "
                f"{variable.path} {list(variable.shape)}."
            )
        values.append(value)
    for (variable, _, _), value in zip(todo, values):
        variable.assign(value)
