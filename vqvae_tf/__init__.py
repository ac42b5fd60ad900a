"""vqvae-tf: VQ-VAE (van den Oord et al. 2017) with a PixelCNN prior, in TensorFlow / Keras 3."""

from vqvae_tf.codes import export_codes, read_codes
from vqvae_tf.configs import PRESET_NAMES, VQVAEConfig, get_config
from vqvae_tf.models import VQVAE
from vqvae_tf.nets import Decoder, Encoder, ResidualStack
from vqvae_tf.pixelcnn import GatedBlock, MaskedConv2D, PixelCNN
from vqvae_tf.quantizers import CodebookUsage, VectorQuantizer, VectorQuantizerEMA
from vqvae_tf.sampling import sample_codes

__all__ = [
    "CodebookUsage",
    "Decoder",
    "Encoder",
    "GatedBlock",
    "MaskedConv2D",
    "PixelCNN",
    "PRESET_NAMES",
    "ResidualStack",
    "VQVAE",
    "VQVAEConfig",
    "VectorQuantizer",
    "VectorQuantizerEMA",
    "export_codes",
    "get_config",
    "read_codes",
    "sample_codes",
]
