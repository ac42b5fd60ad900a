"""Models, one per file: `vqvae.VQVAE` (the autoencoder; `vqvae.ImageAutoencoder` is what every
autoencoder shares), `pixelcnn.PixelCNN` (the prior over its codes, optionally spatially
conditioned and with attention) and the prior's samplers (`pixelcnn_sampling`),
`transformer.TransformerPrior` and `maskgit.MaskGITPrior` (transformer priors); a family of
several files is a package: `vqvae2/` (`VQVAE2` and its `HierarchicalPrior`). A new model is built
from `vqvae_tf.layers`; nothing here imports training or export code."""

from vqvae_tf.models.maskgit import MaskGITPrior
from vqvae_tf.models.pixelcnn import PixelCNN
from vqvae_tf.models.pixelcnn_sampling import sample_codes, sample_grids
from vqvae_tf.models.transformer import TransformerPrior
from vqvae_tf.models.vqvae import VQVAE
from vqvae_tf.models.vqvae2 import VQVAE2, HierarchicalPrior

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
