"""The keras.io VQ-VAE example's PixelCNN and sampler, rebuilt as the baseline of bench/sampling.py.

"Vector-Quantized Variational Autoencoders" (keras.io/examples/generative/vq_vae): a PixelCNN of
128 filters over one-hot codes, a 7x7 mask-"A" first layer, 2 residual blocks (1x1 -> masked 3x3
"B" -> 1x1, added to the input), 2 masked 1x1 layers and a 1x1 output layer of K logits; its
sampler calls `predict` on the whole grid once per position and samples that position's code with
`tfp.distributions.Categorical`. Our own code, written from that description; nothing here is
used by the library.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow_probability as tfp


class PixelConvLayer(keras.layers.Layer):
    """A Conv2D whose kernel is masked to the positions before the centre ("A") or up to it ("B")."""

    def __init__(self, mask_type, **kwargs):
        super().__init__()
        self.mask_type = mask_type
        self.conv = keras.layers.Conv2D(**kwargs)

    def build(self, input_shape):
        self.conv.build(input_shape)
        kh, kw = self.conv.kernel.shape[:2]
        mask = np.zeros(self.conv.kernel.shape, np.float32)
        mask[: kh // 2, ...] = 1.0
        mask[kh // 2, : kw // 2, ...] = 1.0
        if self.mask_type == "B":
            mask[kh // 2, kw // 2, ...] = 1.0
        self.mask = mask  # NumPy: build may run in a scratch graph

    def call(self, inputs):
        self.conv.kernel.assign(self.conv.kernel * self.mask)
        return self.conv(inputs)


class ResidualBlock(keras.layers.Layer):
    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.conv1 = keras.layers.Conv2D(filters, 1, activation="relu")
        self.pixel_conv = PixelConvLayer("B", filters=filters // 2, kernel_size=3, activation="relu", padding="same")
        self.conv2 = keras.layers.Conv2D(filters, 1, activation="relu")

    def call(self, inputs):
        return keras.layers.add([inputs, self.conv2(self.pixel_conv(self.conv1(inputs)))])


def build(num_embeddings: int, latent_shape, filters: int = 128, residual_blocks: int = 2, pixelcnn_layers: int = 2):
    """The example's PixelCNN: codes int [B,h,w] -> logits [B,h,w,K]."""
    inputs = keras.Input(latent_shape, dtype="int32")
    x = keras.ops.one_hot(inputs, num_embeddings)
    x = PixelConvLayer("A", filters=filters, kernel_size=7, activation="relu", padding="same")(x)
    for _ in range(residual_blocks):
        x = ResidualBlock(filters)(x)
    for _ in range(pixelcnn_layers):
        x = PixelConvLayer("B", filters=filters, kernel_size=1, strides=1, activation="relu", padding="valid")(x)
    return keras.Model(inputs, keras.layers.Conv2D(num_embeddings, 1, padding="valid")(x))


def sample(pixel_cnn, num_samples: int, latent_shape) -> np.ndarray:
    """The example's sampler: one `predict` of the whole grid per position."""
    h, w = latent_shape
    priors = np.zeros((num_samples, h, w), np.int32)
    for row in range(h):
        for col in range(w):
            logits = pixel_cnn.predict(priors, verbose=0)
            probs = tfp.distributions.Categorical(logits=logits)
            priors[:, row, col] = probs.sample()[:, row, col]
    return priors
