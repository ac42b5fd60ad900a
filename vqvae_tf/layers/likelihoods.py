"""Discrete per-pixel decoder likelihoods p(x|z) over 8-bit pixel values {0, ..., 255}.

Each is a `tfp.distributions.QuantizedDistribution` of a continuous distribution on the pixel
scale, with bins centred on the integers and the outer bins absorbing the tails (as in
PixelCNN++). Pixel values are passed as float images in [0, 1] and rounded to 8 bits.
"""

from __future__ import annotations

import math

import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions

LOG2 = math.log(2.0)
# Log-scale range (in pixel units) of the logistic head: scales from ~0.007 to ~1100 pixels.
MIN_LOG_SCALE, MAX_LOG_SCALE = -5.0, 7.0


def _quantized(base):
    # QuantizedDistribution puts P(X in (k-1, k]) on k; shifting the base left by 0.5 centres
    # bin k on k: P(X' in (k-0.5, k+0.5]).
    return tfd.QuantizedDistribution(base, low=0.0, high=255.0)


def discretized_logistic(mean, log_scale):
    """mean: float [..] in [0,1] units; log_scale: log of the scale in pixel units."""
    mean = tf.cast(mean, tf.float32)
    log_scale = tf.clip_by_value(tf.cast(log_scale, tf.float32), MIN_LOG_SCALE, MAX_LOG_SCALE)
    return _quantized(tfd.Logistic(loc=255.0 * mean - 0.5, scale=tf.exp(log_scale)))


def discretized_gaussian(mean, scale):
    """mean in [0,1] units; scale (std) in pixel units."""
    mean = tf.cast(mean, tf.float32)
    return _quantized(tfd.Normal(loc=255.0 * mean - 0.5, scale=tf.cast(scale, tf.float32)))


def to_pixels(images):
    """float images in [0,1] -> float pixel values in {0, ..., 255}."""
    return tf.round(tf.clip_by_value(tf.cast(images, tf.float32), 0.0, 1.0) * 255.0)


def log_prob_per_image(distribution, images):
    """Sum of log p over all pixels and channels of each image: float32 [B] (nats)."""
    return tf.reduce_sum(distribution.log_prob(to_pixels(images)), axis=[1, 2, 3])
