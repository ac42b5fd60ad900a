"""Prior families by name: which prior models a set of exported codes, how to build it, and what
the stages ask of it. Each family is declared beside its model (one file), registered with

    @register_prior_family("pixelcnn")
    class PixelCNNFamily(PriorFamily):
        cls = PixelCNN
        title = "gated PixelCNN"
        ...

and one import line in `models/priors/__init__.py` (a family in your own module registers the same
way, with no edit here: tests/test_extension_recipes.py). The stages (train_prior, export, sample,
presets, the report) ask the family, never a name: its Keras model class, `build(network, meta)`,
the prior config fields it reads, its report title, whether it models one grid, how to size its
config to the grids. Its model keeps the prior API (`grid_shapes`, `num_codes`, `num_classes`,
`log_prob_grids`, `sample_grids_graph`, `bits_per_code`, `prior_network`, `exact_likelihood`).

An autoencoder names the family of its codes (`ImageAutoencoder.prior_family`: `ONE_GRID` for one
code grid, which any one-grid family models; "hierarchical" for VQ-VAE-2's two) and the codes
export records it in meta.json; `family_for(meta, network)` picks the family for those codes and
the prior config's network (`PriorConfig.prior`). This module imports no model.
"""

from __future__ import annotations

from vqvae_tf.models.code_grids import ONE_GRID
from vqvae_tf.utils import files
from vqvae_tf.utils.registry import Registry

# The codes' family of an autoencoder with one code grid (`ONE_GRID`): any family with `one_grid`
# models it. ("pixelcnn" in codes exported before the families were a registry: the same.)
_ONE_GRID_NAMES = (ONE_GRID, "pixelcnn")
# The prior config fields a family's model may take (PriorConfig's network fields).
NETWORK_FIELDS = ("num_filters", "num_layers", "kernel_size", "dropout", "attention_blocks")


class PriorFamily:
    """A kind of prior. Set by a subclass:

    cls: its Keras model class (what a preset's config.json names; `from_preset` loads it).
    title: the report's name for it ("gated PixelCNN").
    network_fields: the prior config fields `build` reads (of `NETWORK_FIELDS`); the others are
      refused when set (`check_config`) and not passed as pipeline flags.
    one_grid: it models an autoencoder's one code grid, so `--prior=<name>` chooses it; a family
      of other codes (VQ-VAE-2's "hierarchical") is chosen by the codes, and `for_network` says
      which `--prior` networks it takes.
    """

    name = ""
    cls = None
    title = ""
    network_fields = ("num_filters", "num_layers", "dropout")
    one_grid = True

    def build(self, network: dict, meta: dict):
        """A new (uncompiled) prior for the codes of `meta` (codes/meta.json): `network` holds
        `NETWORK_FIELDS`, ``num_embeddings``, ``num_classes`` and ``prior`` (the config's network)."""
        raise NotImplementedError

    def describe(self, network: str) -> str:
        """The report's name of this family with `--prior=network`."""
        return self.title

    def for_network(self, network: str) -> PriorFamily:
        """The family that models these codes with `--prior=network` (a family of other codes
        than one grid: itself, or a ValueError naming the networks it takes)."""
        return self

    def check_config(self, config, defaults) -> None:
        """ValueError naming the field when `config` (a PriorConfig) sets a network field this
        family does not read (`defaults`: a PriorConfig of default values)."""
        for field in ("kernel_size", "attention_blocks"):
            if field not in self.network_fields and getattr(config, field) != getattr(defaults, field):
                raise ValueError(
                    f"--{field}={getattr(config, field)}: the {self.name} prior has no {field} "
                    f"(its network fields: {', '.join(self.network_fields)})."
                )

    def fit_config(self, config, grids: dict, fit: bool) -> None:
        """Before training: sizes `config` (a PriorConfig) to the code `grids` ({name: (h, w)})
        where `fit`, and refuses a config that cannot model them. Default: nothing to size."""


_FAMILIES = Registry("prior family")


def register_prior_family(name: str):
    """Class decorator: registers a `PriorFamily` subclass under `name`."""

    def decorator(cls):
        if cls.cls is None:
            raise TypeError(f"Prior family {cls.__name__} names no model class (set `cls`).")
        _FAMILIES.add(name, cls())  # (a name taken: a ValueError naming the family that has it)
        cls.name = name
        return cls

    return decorator


def names() -> tuple:
    return _FAMILIES.names()


def network_names() -> tuple:
    """The families a prior config's `prior` (`--prior`) may name: those of one code grid."""
    return tuple(name for name, family in _FAMILIES.items() if family.one_grid)


def get(name: str) -> PriorFamily:
    return _FAMILIES.get(name)


def codes_family(meta: dict) -> str:
    """The family name meta.json records for its codes (`ONE_GRID` for one grid), or for codes
    exported before families were recorded (format version 1) the one their grids imply."""
    recorded = meta.get("prior_family") if files.format_version(meta) >= 2 else None
    recorded = recorded or ("hierarchical" if "grids" in meta else ONE_GRID)
    return ONE_GRID if recorded in _ONE_GRID_NAMES else recorded


def family_for(meta: dict, network: str = "pixelcnn") -> PriorFamily:
    """The family that models the codes of `meta` with the prior network `network` (a
    `PriorConfig.prior`): the network's own for one code grid; else the codes' family (VQ-VAE-2's
    "hierarchical"), if it takes `network` (`PriorFamily.for_network`)."""
    name = codes_family(meta)
    if name == ONE_GRID:
        family = get(network)
        if not family.one_grid:
            raise ValueError(
                f"The {network!r} prior models other codes than one grid: choose one of {network_names()}."
            )
        return family
    return get(name).for_network(network)


def for_autoencoder(prior_family: str, network: str) -> PriorFamily:
    """`family_for` the codes of an autoencoder whose `prior_family` is given (before any export)."""
    return family_for({"format_version": files.FORMAT_VERSION, "prior_family": prior_family}, network)


def model_classes() -> dict:
    """{class name: class} of every family's model (what a preset's config.json may hold)."""
    return {family.cls.__name__: family.cls for family in _FAMILIES.values()}
