"""Priors over code grids, one family per file, each registered by name (`registry`):

    base.py         GridPrior (the prior API, training, bits per code), AutoregressivePrior
    inputs.py       PriorInputs: the input checks (codes, labels, spatial conditioning)
    sampling.py     what every sampler shares: the seeded inverse-CDF pick; sample_grids, sample_images
    registry.py     PriorFamily, register_prior_family, family_for(codes meta, --prior)
    pixelcnn.py     PixelCNN ("pixelcnn"), its cached sampler in pixelcnn_sampling.py
    transformer.py  TransformerPrior ("transformer"): causal, key/value-cached sampler
    maskgit.py      MaskGITPrior ("maskgit"): bidirectional, parallel decoding
    hierarchical.py HierarchicalPrior ("hierarchical"): VQ-VAE-2's top and bottom priors

A new family: one file with the model and its `@register_prior_family` class, and one import line
below.
"""

from vqvae_tf.models.priors.registry import (
    NETWORK_FIELDS,
    ONE_GRID,
    PriorFamily,
    codes_family,
    family_for,
    for_autoencoder,
    get,
    model_classes,
    names,
    network_names,
    register_prior_family,
)

# The zoo's families, each import registering one, in the order --prior lists them.
# isort: off
from vqvae_tf.models.priors import pixelcnn
from vqvae_tf.models.priors import transformer
from vqvae_tf.models.priors import maskgit
from vqvae_tf.models.priors import hierarchical
# isort: on

__all__ = [
    "NETWORK_FIELDS",
    "ONE_GRID",
    "PriorFamily",
    "codes_family",
    "family_for",
    "for_autoencoder",
    "get",
    "hierarchical",
    "maskgit",
    "model_classes",
    "names",
    "network_names",
    "pixelcnn",
    "register_prior_family",
    "transformer",
]
