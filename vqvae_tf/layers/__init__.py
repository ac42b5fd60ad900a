"""Reusable Keras layers: quantizers, masked convolutions, encoder/decoder nets, likelihoods.

Every layer is a registered Keras serializable in the package below, so `.keras` files of any
model in the zoo load by name.
"""

SERIALIZATION_PACKAGE = "vqvae_tf"


def __getattr__(name):
    # `vqvae_tf.layers.Quantizer` (the quantizers' base) without importing TF at package import.
    if name == "Quantizer":
        from vqvae_tf.layers.quantizers.base import Quantizer

        return Quantizer
    raise AttributeError(name)
