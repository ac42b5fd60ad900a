"""The quantizer registry: a name, the layer class and the options it declares.

    @register_quantizer("lfq", ENTROPY_WEIGHT, COMMITMENT_COST, help="lookup-free quantization")
    class LookupFreeQuantizer(Quantizer): ...

One registration is all a new quantizer needs: `VQVAE(quantizer="lfq", entropy_weight=...)`, the
configs' fields, the `--quantizer` flag and one flag per option, presets and every stage derive
from this table. An option is a *field*: the name it has on `VQVAE`, in a config, in config.json
and as a flag (``fsq_levels``), and the constructor argument it feeds (``levels``). Quantizers
share a field by declaring the same `Option` (``commitment_cost``); its default is the model's.
"""

from __future__ import annotations

import dataclasses
import typing

OPTION_TYPES = ("int", "float", "bool", "str", "int_list")


@dataclasses.dataclass(frozen=True)
class Option:
    """One quantizer option as a model / config field and a flag.

    Attributes:
      field: the name on `VQVAE`, in configs, config.json and as the flag (``--field``).
      default: the model's default; None passes nothing, so the layer's own default applies.
      help: the flag's help.
      arg: the layer's constructor argument (default: `field`).
      type: one of `OPTION_TYPES` (how the flag parses).
      choices: the allowed values of a "str" option (the flag is an enum).
      architecture: True if the value shapes the variables (a checkpoint made with one value
        cannot be restored into a model with another).
    """

    field: str
    default: typing.Any
    help: str
    arg: str | None = None
    type: str = "float"
    choices: tuple = ()
    architecture: bool = False

    def __post_init__(self):
        if self.type not in OPTION_TYPES:
            raise ValueError(f"Option {self.field!r}: type must be one of {OPTION_TYPES}, got {self.type!r}.")

    @property
    def layer_arg(self) -> str:
        return self.arg or self.field


@dataclasses.dataclass(frozen=True)
class Entry:
    """A registered quantizer: `name` (``--quantizer=name``), its class and its options."""

    name: str
    cls: type
    options: tuple
    help: str

    @property
    def fields(self) -> tuple:
        return tuple(option.field for option in self.options)

    def layer_kwargs(self, values: dict) -> dict:
        """The layer's constructor arguments for field `values` (a field that is absent or None
        leaves the layer's default)."""
        return {o.layer_arg: values[o.field] for o in self.options if values.get(o.field) is not None}


_REGISTRY: dict[str, Entry] = {}


def register_quantizer(name: str, *options: Option, help: str = ""):
    """Class decorator: registers a `Quantizer` subclass as ``--quantizer=name`` with `options`.

    Raises:
      ValueError: the name is taken by another class, or a field is declared with another
        default, type or meaning than a quantizer registered before.
    """

    def decorator(cls):
        existing = _REGISTRY.get(name)
        if existing is not None and existing.cls.__qualname__ != cls.__qualname__:
            raise ValueError(f"Quantizer name {name!r} is already registered to {existing.cls.__name__}.")
        known = option_fields()
        for option in options:
            other = known.get(option.field)
            if other is not None and (other.default, other.type, other.choices, other.architecture) != (
                option.default,
                option.type,
                option.choices,
                option.architecture,
            ):
                raise ValueError(
                    f"Quantizer {name!r} declares option {option.field!r} unlike the one registered before "
                    f"({option} vs {other}): share the same Option object."
                )
        _REGISTRY[name] = Entry(name, cls, tuple(options), help or (cls.__doc__ or "").strip().split("\n")[0])
        cls.registered_name = name
        return cls

    return decorator


def names() -> tuple:
    """The registered quantizer names, in registration order."""
    return tuple(_REGISTRY)


def get(name: str) -> Entry:
    """The entry of `name`; ValueError listing the registered names otherwise."""
    if name not in _REGISTRY:
        raise ValueError(f"quantizer must be one of {', '.join(map(repr, _REGISTRY))}, got {name!r}.")
    return _REGISTRY[name]


def entries() -> tuple:
    return tuple(_REGISTRY.values())


def option_fields() -> dict:
    """{field: Option} over every registered quantizer, in registration order."""
    fields = {}
    for entry in _REGISTRY.values():
        for option in entry.options:
            fields.setdefault(option.field, option)
    return fields


def users_of(field: str) -> tuple:
    """The names of the quantizers that declare `field`."""
    return tuple(e.name for e in _REGISTRY.values() if field in e.fields)


def not_applicable(field: str, value, quantizer: str) -> str:
    """The error message for option `field` set for `quantizer`, which does not declare it:
    "<value> applies to the vq, ema and rvq quantizers, not 'fsq'." (`value`: how it was given)."""
    users = users_of(field)
    listed = ", ".join(users[:-1]) + (" and " if len(users) > 1 else "") + users[-1]
    return f"{value} applies to the {listed} quantizer{'s' if len(users) > 1 else ''}, not {quantizer!r}."
