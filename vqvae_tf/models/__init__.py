"""Models: `autoencoders/` (VQVAE, VQVAE2 and what they share) and `priors/` (PixelCNN, the
transformer, MaskGIT, VQ-VAE-2's hierarchical prior, their samplers and the family registry), each
a package with one model per file registered by name; `presets.py` (preset directories). A new
model is built from `vqvae_tf.layers`; nothing here imports training or export code."""

from vqvae_tf.models.autoencoders.vqvae import VQVAE
from vqvae_tf.models.autoencoders.vqvae2 import VQVAE2
from vqvae_tf.models.priors.hierarchical import HierarchicalPrior
from vqvae_tf.models.priors.maskgit import MaskGITPrior
from vqvae_tf.models.priors.pixelcnn import PixelCNN
from vqvae_tf.models.priors.pixelcnn_sampling import sample_codes
from vqvae_tf.models.priors.sampling import sample_grids
from vqvae_tf.models.priors.transformer import TransformerPrior

__all__ = [
    "VQVAE2",
    "HierarchicalPrior",
    "MaskGITPrior",
    "PixelCNN",
    "TransformerPrior",
    "VQVAE",
    "sample_codes",
    "sample_grids",
]
