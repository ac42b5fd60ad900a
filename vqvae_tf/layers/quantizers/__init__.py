"""The quantizer zoo: one quantizer per file, each registered by name (`registry`).

    base.py          Quantizer: the contract every quantizer keeps, held in code
    registry.py      register_quantizer / Option: name -> class and the options it declares
    options.py       the options several quantizers share (commitment_cost, decay, ...)
    ops.py           distances, nearest codes, straight-through and rotation-trick gradients
    upkeep.py        codebook upkeep: usage statistics, dead-code restarts, k-means init
    usage.py         CodebookUsage: code counts over a dataset
    vq.py            "vq"   VectorQuantizer (gradient-trained codebook)
    ema.py           "ema"  VectorQuantizerEMA (EMA codebook, the default)
    fsq.py           "fsq"  FiniteScalarQuantizer
    residual_vq.py   "rvq"  ResidualVectorQuantizer
    binary.py        what LFQ and BSQ share (sign codes, entropy penalty)
    build.py         from a model's arguments (a name and options, or an instance) to its layer
    lfq.py           "lfq"  LookupFreeQuantizer
    bsq.py           "bsq"  BinarySphericalQuantizer
    simvq.py         "simvq" SimVQQuantizer (a frozen random codebook times a learned linear map)
    ibq.py           "ibq"  IndexBackpropQuantizer (a straight-through one-hot over the softmax)

A new quantizer is one file here (a `Quantizer` subclass decorated with `register_quantizer`) and
one import line below, in registration order (the order `--quantizer` lists them in).
"""

from vqvae_tf.layers.quantizers.base import Quantizer
from vqvae_tf.layers.quantizers.ops import (
    DISTANCES,
    GRADIENTS,
    nearest_codes,
    perplexity_from_counts,
    rotation_trick,
    straight_through,
)
from vqvae_tf.layers.quantizers.registry import Option, option_fields, register_quantizer
from vqvae_tf.layers.quantizers.usage import CodebookUsage

# Registrations, in the order --quantizer lists them.
# isort: off
from vqvae_tf.layers.quantizers.vq import VectorQuantizer
from vqvae_tf.layers.quantizers.ema import VectorQuantizerEMA
from vqvae_tf.layers.quantizers.fsq import FiniteScalarQuantizer
from vqvae_tf.layers.quantizers.residual_vq import ResidualVectorQuantizer
from vqvae_tf.layers.quantizers.lfq import LookupFreeQuantizer
from vqvae_tf.layers.quantizers.bsq import BinarySphericalQuantizer
from vqvae_tf.layers.quantizers.simvq import SimVQQuantizer
from vqvae_tf.layers.quantizers.ibq import IndexBackpropQuantizer
# isort: on

__all__ = [
    "DISTANCES",
    "GRADIENTS",
    "BinarySphericalQuantizer",
    "CodebookUsage",
    "FiniteScalarQuantizer",
    "IndexBackpropQuantizer",
    "LookupFreeQuantizer",
    "Option",
    "Quantizer",
    "ResidualVectorQuantizer",
    "SimVQQuantizer",
    "VectorQuantizer",
    "VectorQuantizerEMA",
    "nearest_codes",
    "option_fields",
    "perplexity_from_counts",
    "register_quantizer",
    "rotation_trick",
    "straight_through",
]
