"""Models, one per file: `vqvae.VQVAE` (the autoencoder), `pixelcnn.PixelCNN` (the prior over its
codes) and the prior's samplers (`pixelcnn_sampling`). A new model family is a new file here built
from `vqvae_tf.layers`; nothing here imports training or export code."""

from vqvae_tf.models.pixelcnn import PixelCNN
from vqvae_tf.models.pixelcnn_sampling import sample_codes
from vqvae_tf.models.vqvae import VQVAE

__all__ = ["PixelCNN", "VQVAE", "sample_codes"]
