"""Reusable Keras layers: quantizers, masked convolutions, encoder/decoder nets, likelihoods.

Every layer is a registered Keras serializable in the package below, so `.keras` files of any
model in the zoo load by name.
"""

SERIALIZATION_PACKAGE = "vqvae_tf"


def __getattr__(name):
    # `vqvae_tf.layers.Quantizer` and every quantizer class (`vqvae_tf.layers.SimVQQuantizer`, ...)
    # without importing TF at package import.
    import importlib

    if name.startswith("__") or name == "quantizers":  # (a submodule being imported: not ours to give)
        raise AttributeError(name)
    quantizers = importlib.import_module("vqvae_tf.layers.quantizers")
    if name in quantizers.__all__:
        return getattr(quantizers, name)
    raise AttributeError(name)
