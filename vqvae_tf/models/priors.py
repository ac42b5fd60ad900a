"""Prior families by name: which prior models a set of exported codes, and how to build it.

    @register_prior_family("pixelcnn")
    class PixelCNNFamily(PriorFamily): ...

A family names its Keras model class and builds a model from the prior config's network fields
and the codes' meta.json (`build`); the stages (train_prior, export, sample, presets) use only
the prior API every family's model keeps (`grid_shapes`, `num_codes`, `num_classes`,
`log_prob_grids`, `sample_grids_graph`, `bits_per_code`), so they never branch on the model type.
An autoencoder names the family of its codes (`ImageAutoencoder.prior_family`: "pixelcnn" for one
grid, "hierarchical" for VQ-VAE-2's two) and the codes export records it in meta.json;
`family_for(meta, network)` picks the family for those codes and the prior config's network
(`PriorConfig.prior`: one grid takes any network; VQ-VAE-2's grids take "pixelcnn").
"""

from __future__ import annotations

from vqvae_tf.data import codes
from vqvae_tf.layers.transformer import sized_from_prior_config
from vqvae_tf.models.maskgit import MaskGITPrior
from vqvae_tf.models.pixelcnn import PixelCNN
from vqvae_tf.models.transformer import TransformerPrior
from vqvae_tf.models.vqvae2.prior import HierarchicalPrior
from vqvae_tf.utils import files

# The prior config fields a family's model takes (PriorConfig's network fields).
NETWORK_FIELDS = ("num_filters", "num_layers", "kernel_size", "dropout", "attention_blocks")


class PriorFamily:
    """A kind of prior: `name`, its Keras model class `cls`, and `build(network, meta)`.
    `one_grid`: it models a VQ-VAE's one code grid, so `--prior=<name>` chooses it (VQ-VAE-2's
    "hierarchical" models two and is chosen by the codes)."""

    name = ""
    cls = None
    one_grid = True

    def build(self, network: dict, meta: dict):
        """A new (uncompiled) prior for the codes of `meta` (codes/meta.json): `network` holds
        `NETWORK_FIELDS`, ``num_embeddings`` and ``num_classes``."""
        raise NotImplementedError


_FAMILIES: dict = {}


def register_prior_family(name: str):
    """Class decorator: registers a `PriorFamily` subclass under `name`."""

    def decorator(cls):
        if name in _FAMILIES:
            raise ValueError(f"A prior family named {name!r} is registered already.")
        cls.name = name
        _FAMILIES[name] = cls()
        return cls

    return decorator


def names() -> tuple:
    return tuple(_FAMILIES)


def network_names() -> tuple:
    """The families a prior config's `prior` (`--prior`) may name: those of one code grid."""
    return tuple(name for name, family in _FAMILIES.items() if family.one_grid)


def get(name: str) -> PriorFamily:
    if name not in _FAMILIES:
        raise ValueError(f"prior family must be one of {', '.join(map(repr, _FAMILIES))}, got {name!r}.")
    return _FAMILIES[name]


def family_for(meta: dict, network: str = "pixelcnn") -> PriorFamily:
    """The family that models the codes of `meta` with the prior network `network` (a
    `PriorConfig.prior`): the network's own for one code grid; for the codes' family
    (``prior_family``, or for codes exported before families were recorded, format version 1,
    the one their grids imply) "hierarchical", VQ-VAE-2's pair, whose top level `network` is."""
    codes_family = meta["prior_family"] if files.format_version(meta) >= 2 else None
    codes_family = codes_family or ("hierarchical" if "grids" in meta else "pixelcnn")
    if codes_family == "pixelcnn":
        return get(network)
    if network not in HierarchicalPrior.top_priors:
        raise ValueError(
            f"The codes are {codes_family!r} ({', '.join(codes.grid_shapes(meta))}): their prior's top level is "
            f"one of {', '.join(HierarchicalPrior.top_priors)}, not {network!r} (MaskGIT has no exact likelihood, "
            "which log p(top) + log p(bottom | top) needs)."
        )
    return get(codes_family)


def model_classes() -> dict:
    """{class name: class} of every family's model (what a preset's config.json may hold)."""
    return {family.cls.__name__: family.cls for family in _FAMILIES.values()}


@register_prior_family("pixelcnn")
class PixelCNNFamily(PriorFamily):
    """A gated PixelCNN over one code grid (residual VQ's depth side by side: ``depth``)."""

    cls = PixelCNN

    def build(self, network: dict, meta: dict):
        grid = tuple(codes.grid_shapes(meta)["codes"])
        fields = {k: v for k, v in network.items() if k != "prior"}
        return PixelCNN(latent_shape=grid, depth=meta.get("depth", 1), **fields)


@register_prior_family("hierarchical")
class HierarchicalFamily(PriorFamily):
    """VQ-VAE-2's top prior and bottom prior conditioned on the top codes."""

    cls = HierarchicalPrior
    one_grid = False

    def build(self, network: dict, meta: dict):
        grids = {name: tuple(shape) for name, shape in codes.grid_shapes(meta).items()}
        fields = {k: v for k, v in network.items() if k != "prior"}
        return HierarchicalPrior(
            top_shape=grids["codes_top"],
            bottom_shape=grids["codes_bottom"],
            top_prior=network.get("prior", "pixelcnn"),
            **fields,
        )


@register_prior_family("transformer")
class TransformerFamily(PriorFamily):
    """A causal transformer over one code grid (residual VQ's depth side by side): the prior
    config's `num_filters` is its width, `num_layers` its blocks (None: 4), `dropout` its dropout;
    4 attention heads (fewer when the width is not divisible by 4)."""

    cls = TransformerPrior

    def build(self, network: dict, meta: dict):
        return self.cls(**transformer_arguments(network, meta))


@register_prior_family("maskgit")
class MaskGITFamily(TransformerFamily):
    """MaskGIT's bidirectional transformer, sized from the prior config as the causal one."""

    cls = MaskGITPrior


def transformer_arguments(network: dict, meta: dict) -> dict:
    """The transformer priors' arguments from the prior config's network fields and the codes' meta."""
    return dict(
        num_embeddings=network["num_embeddings"],
        latent_shape=tuple(codes.grid_shapes(meta)["codes"]),
        **sized_from_prior_config(network["num_filters"], network["num_layers"]),
        dropout=network["dropout"],
        num_classes=network["num_classes"],
        depth=meta.get("depth", 1),
    )
