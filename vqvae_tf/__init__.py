"""vqvae-tf: VQ-VAE (van den Oord et al. 2017) with a PixelCNN prior, in TensorFlow / Keras 3."""

from vqvae_tf.configs import PRESET_NAMES, VQVAEConfig, get_config
from vqvae_tf.models import VQVAE
from vqvae_tf.nets import Decoder, Encoder, ResidualStack
from vqvae_tf.quantizers import CodebookUsage, VectorQuantizer, VectorQuantizerEMA

__all__ = [
    "CodebookUsage",
    "Decoder",
    "Encoder",
    "PRESET_NAMES",
    "ResidualStack",
    "VQVAE",
    "VQVAEConfig",
    "VectorQuantizer",
    "VectorQuantizerEMA",
    "get_config",
]
