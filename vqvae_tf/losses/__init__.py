"""Training losses beyond the likelihood: LPIPS (perceptual) and the PatchGAN discriminator."""

from vqvae_tf.losses.lpips import LPIPS
from vqvae_tf.losses.lpips_weights import LPIPSWeightsError

__all__ = ["LPIPS", "LPIPSWeightsError"]
