"""VQ-VAE-2 (Razavi et al. 2019): the two-level model (`model.VQVAE2`) and its prior
(`prior.HierarchicalPrior`: top PixelCNN, bottom PixelCNN conditioned on the top codes)."""

from vqvae_tf.models.vqvae2.model import GRID_NAMES, VQVAE2
from vqvae_tf.models.vqvae2.prior import HierarchicalPrior

__all__ = ["GRID_NAMES", "HierarchicalPrior", "VQVAE2"]
