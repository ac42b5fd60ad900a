"""Ancestral sampling of code grids from a `PixelCNN`, as one compiled graph.

Both samplers are a `tf.while_loop` over positions with stateless random ops (seed
``[seed, position]``), so they run inside a SavedModel signature and under ``jit_compile``:

- plain: the whole network on the whole grid at every position (h*w full passes);
- fast (default): the vertical stack, which only sees rows above, is computed once per row, and
  each position runs only the horizontal stack on its own row (Ramachandran et al. 2017,
  "Fast Generation for Convolutional Autoregressive Models", restrict the computation to what
  the next position needs). For a 7x7 grid that is 7 full vertical passes + 49 single-row passes
  instead of 49 full passes. Same seed -> the same codes as the plain sampler.
"""

from __future__ import annotations

import numbers

import tensorflow as tf

from vqvae_tf import checks

MAX_TOP_K_NOTE = "top_k must be in [1, num_embeddings]"


def _check_python_args(prior, num_samples, temperature, top_k):
    if isinstance(num_samples, numbers.Number) and (isinstance(num_samples, bool) or num_samples <= 0):
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}.")
    if isinstance(temperature, numbers.Number) and not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}.")
    if top_k is not None and (not isinstance(top_k, int) or not 1 <= top_k <= prior.num_embeddings):
        raise ValueError(f"{MAX_TOP_K_NOTE} ({prior.num_embeddings}), got {top_k!r}.")


def _pick(logits, temperature, seed, position, top_k):
    """One code per row of `logits` [N,K]."""
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = tf.math.top_k(logits, k=top_k).values[:, -1:]
        logits = tf.where(logits < kth, tf.constant(-1e30, logits.dtype), logits)
    return tf.random.stateless_categorical(logits, 1, seed=tf.stack([seed, position]), dtype=tf.int32)[:, 0]


def _place(codes, position, values):
    h, w = codes.shape[1], codes.shape[2]
    mask = tf.reshape(tf.one_hot(position, h * w, dtype=tf.int32), [1, h, w])
    return codes * (1 - mask) + values[:, None, None] * mask


def sample_codes_graph(prior, num_samples, temperature, seed, labels=None, top_k=None, fast=True):
    """The sampler as TF ops (for use inside a traced function / SavedModel endpoint).

    num_samples: int32 scalar tensor; temperature: float32 scalar (> 0, asserted); seed: int32
    scalar; labels: int32 [num_samples] or None; top_k: Python int or None.
    Returns int32 codes [num_samples, h, w].
    """
    h, w = prior.latent_shape
    num_samples = tf.convert_to_tensor(num_samples, tf.int32)
    temperature = tf.convert_to_tensor(temperature, tf.float32)
    seed = tf.cast(seed, tf.int32)
    num_samples = checks.require(num_samples, num_samples > 0, "num_samples must be > 0, got", num_samples)
    temperature = checks.require(temperature, temperature > 0, "temperature must be > 0, got", temperature)
    labels = prior.check_labels(labels, num_samples)
    codes = tf.zeros(tf.stack([num_samples, h, w]), tf.int32)
    codes = tf.ensure_shape(codes, [None, h, w])

    if not fast:

        def body(position, codes):
            logits = prior.logits_from_embeddings(prior.embedding(codes), labels)
            logits = tf.reshape(logits, [-1, h * w, prior.num_embeddings])[:, position]
            return position + 1, _place(codes, position, _pick(logits, temperature, seed, position, top_k))

        _, codes = tf.while_loop(lambda p, c: p < h * w, body, [tf.constant(0), codes])
        return codes

    def row_body(i, codes):
        links = [link[:, i][:, None] for link in prior.vertical_links(prior.embedding(codes), labels)]

        def col_body(j, codes):
            row = prior.embedding(codes[:, i][:, None])  # index + expand: a static size for XLA
            logits = prior.horizontal_logits(row, links, labels)[:, 0, j]
            position = i * w + j
            return j + 1, _place(codes, position, _pick(logits, temperature, seed, position, top_k))

        _, codes = tf.while_loop(lambda j, c: j < w, col_body, [tf.constant(0), codes])
        return i + 1, codes

    _, codes = tf.while_loop(lambda i, c: i < h, row_body, [tf.constant(0), codes])
    return codes


def sample_codes(
    prior,
    num_samples: int,
    temperature: float = 1.0,
    seed: int = 0,
    labels=None,
    top_k=None,
    fast: bool = True,
    jit_compile: bool = False,
):
    """Samples codes int32 [num_samples, h, w] from `prior` in one compiled graph.

    Args:
      prior: a `PixelCNN`.
      num_samples: > 0.
      temperature: > 0; logits are divided by it (-> 0 approaches argmax decoding).
      seed: integer; the same seed gives the same codes.
      labels: int [num_samples] class labels for a conditional prior, else None.
      top_k: keep only the k most likely codes at each position (None: all).
      fast: use the row-cached sampler (same result as the plain one, fewer FLOPs).
      jit_compile: XLA-compile the sampling graph.
    """
    _check_python_args(prior, num_samples, temperature, top_k)
    if labels is not None:
        labels = tf.convert_to_tensor(labels)
    key = (top_k, fast, labels is not None, jit_compile)
    cache = prior.__dict__.setdefault("_sampler_cache", {})
    if key not in cache:
        cache[key] = tf.function(
            lambda n, t, s, y: sample_codes_graph(prior, n, t, s, y, top_k=top_k, fast=fast),
            jit_compile=jit_compile,
            reduce_retracing=True,
        )
    return cache[key](
        tf.constant(num_samples, tf.int32), tf.constant(temperature, tf.float32), tf.constant(seed, tf.int32), labels
    )


def sample_codes_from_uniforms_graph(prior, uniforms, temperature, labels=None):
    """Ancestral sampling driven by caller-supplied random numbers (for on-device generators,
    where random ops are not builtins): uniforms float32 [N, h*w] in [0, 1), one per position;
    each code is the inverse CDF of softmax(logits / temperature) at its uniform.
    Returns int32 codes [N, h, w]."""
    h, w = prior.latent_shape
    k = prior.num_embeddings
    n = tf.shape(uniforms)[0]
    codes = tf.zeros(tf.stack([n, h, w]), tf.int32)

    def body(position, codes):
        logits = tf.reshape(prior.logits_from_embeddings(prior.embedding(codes), labels), [n, h * w, k])
        probs = tf.nn.softmax(tf.gather(logits, position, axis=1) / temperature, axis=-1)
        u = tf.gather(uniforms, position, axis=1)[:, None]
        code = tf.minimum(tf.reduce_sum(tf.cast(tf.cumsum(probs, axis=-1) < u, tf.int32), axis=-1), k - 1)
        return position + 1, _place(codes, position, code)

    _, codes = tf.while_loop(lambda p, c: p < h * w, body, [tf.constant(0), codes])
    return codes
