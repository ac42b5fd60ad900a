"""From a model's arguments to its quantizer layer: a registered name with the options of the
registry's fields, or a `Quantizer` instance (or its serialized config). `VQVAE` and the configs
use these, so that a new quantizer needs no code outside its own file."""

from __future__ import annotations

import keras

from vqvae_tf.layers.quantizers import registry
from vqvae_tf.layers.quantizers.base import Quantizer


def option_values(given: dict) -> dict:
    """Every registered option field: its value in `given`, else its default (int lists as tuples)."""
    values = {}
    for field, option in registry.option_fields().items():
        value = given.get(field, option.default)
        values[field] = tuple(value) if option.type == "int_list" and value is not None else value
    return values


def as_layer(quantizer, options: dict | None = None):
    """The layer of a `quantizer` argument that is one (a `Quantizer`, or its serialized config as
    `get_config` writes it), else None (a registered name). `options` are refused with a layer."""
    if isinstance(quantizer, dict):
        quantizer = keras.saving.deserialize_keras_object(quantizer)
    if isinstance(quantizer, str):
        return None
    if not isinstance(quantizer, Quantizer):
        raise TypeError(
            f"quantizer must be a registered name ({', '.join(registry.names())}) or a Quantizer layer, "
            f"got {type(quantizer).__name__}."
        )
    if options:
        raise ValueError(
            f"Quantizer options ({', '.join(sorted(options))}) apply to a quantizer given by name; "
            f"set them on the {type(quantizer).__name__} layer instead."
        )
    return quantizer


def geometry(arguments: dict) -> tuple:
    """(K, D, codes per position) of the quantizer of `arguments` (``quantizer``,
    ``num_embeddings``, ``embedding_dim`` and the option fields)."""
    layer = as_layer(arguments["quantizer"])
    if layer is not None:
        return layer.num_embeddings, layer.embedding_dim, layer.codes_per_position
    entry = registry.get(arguments["quantizer"])
    kwargs = entry.layer_kwargs(option_values(arguments))
    return entry.cls.geometry(arguments["num_embeddings"], arguments["embedding_dim"], **kwargs)


def named(arguments: dict, seed: int = 0, layer_name: str = "quantizer"):
    """The quantizer layer named by `arguments["quantizer"]` with its options; ValueError naming an
    option of another quantizer that is not at its default, or a K / D that its options fix otherwise."""
    name = arguments["quantizer"]
    entry = registry.get(name)
    values = option_values(arguments)
    for field, option in registry.option_fields().items():
        if field not in entry.fields and values[field] != option.default:
            raise ValueError(registry.not_applicable(field, f"{field}={values[field]!r}", name))
    kwargs = entry.layer_kwargs(values)
    k, d, _ = entry.cls.geometry(arguments["num_embeddings"], arguments["embedding_dim"], **kwargs)
    if (k, d) != (arguments["num_embeddings"], arguments["embedding_dim"]):
        fixed = ", ".join(f"{f}={values[f]!r}" for f in entry.fields if registry.option_fields()[f].architecture)
        raise ValueError(
            f"quantizer={name!r}{' with ' + fixed if fixed else ''} quantizes embedding_dim={d} channels into "
            f"num_embeddings={k} codes, got embedding_dim={arguments['embedding_dim']} and num_embeddings="
            f"{arguments['num_embeddings']} (a config derives both)."
        )
    return entry.cls.from_options(k, d, seed=seed, name=layer_name, **kwargs)
