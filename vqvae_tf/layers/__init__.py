"""Reusable Keras layers: quantizers, masked convolutions, encoder/decoder nets, likelihoods.

Every layer is a registered Keras serializable in the package below, so `.keras` files of any
model in the zoo load by name.
"""

SERIALIZATION_PACKAGE = "vqvae_tf"
