"""What every prior's sampler shares: the seeded inverse-CDF pick of a code, placing it in the grid,
the Python-side argument checks, and `sample_grids` / `sample_images` for any prior.

Each code is the inverse CDF of softmax(logits / temperature) at a seeded uniform of (seed,
position) (`vqvae_tf.utils.hash_random`), so a sampler runs inside a SavedModel signature and
under ``jit_compile`` and picks the same codes with and without XLA; the on-device generators
feed the uniforms instead (`pick_at`, `inverse_cdf`: builtin ops only).
"""

from __future__ import annotations

import inspect
import numbers

import tensorflow as tf

from vqvae_tf.utils import hash_random

MAX_TOP_K_NOTE = "top_k must be in [1, num_embeddings]"


def check_python_args(prior, num_samples, temperature, top_k):
    if isinstance(num_samples, numbers.Number) and (isinstance(num_samples, bool) or num_samples <= 0):
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}.")
    if isinstance(temperature, numbers.Number) and not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}.")
    if top_k is not None and (not isinstance(top_k, int) or not 1 <= top_k <= prior.num_embeddings):
        raise ValueError(f"{MAX_TOP_K_NOTE} ({prior.num_embeddings}), got {top_k!r}.")


def inverse_cdf(logits, uniforms):
    """One code per row of `logits` [N, K]: where the CDF of softmax(logits) passes `uniforms` [N]
    in [0, 1) (int32 [N]). The uniform is scaled by the CDF's float total, so a code of zero
    probability (a top-k cut) is never chosen. Builtin ops only (the TFLite generators use it)."""
    cdf = tf.cumsum(tf.nn.softmax(logits, axis=-1), axis=-1)
    return tf.reduce_sum(tf.cast(cdf <= uniforms[:, None] * cdf[:, -1:], tf.int32), axis=-1)


def pick_at(logits, temperature, uniforms, top_k=None):
    """One code per row of `logits` [N,K]: `inverse_cdf` of softmax(logits / temperature), cut to
    the `top_k` most likely codes, at `uniforms` [N]."""
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = tf.math.top_k(logits, k=top_k).values[:, -1:]
        logits = tf.where(logits < kth, tf.constant(-1e30, logits.dtype), logits)
    return inverse_cdf(logits, uniforms)


def pick(logits, temperature, seed, position, top_k):
    """`pick_at` the uniforms of (seed, position) (`hash_random`: the same under XLA, so a
    jit-compiled sampler picks the same codes)."""
    return pick_at(logits, temperature, hash_random.uniform(seed, position, tf.shape(logits)[:1]), top_k)


def place(codes, position, values):
    h, w = codes.shape[1], codes.shape[2]
    mask = tf.reshape(tf.one_hot(position, h * w, dtype=tf.int32), [1, h, w])
    return codes * (1 - mask) + values[:, None, None] * mask


def _levels(value) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def sample_grids(
    prior, num_samples: int, temperature=1.0, seed=0, labels=None, top_k=None, jit_compile=False, **options
) -> dict:
    """Code grids sampled from any prior in one compiled graph: {"codes": ...} from a `PixelCNN`,
    `TransformerPrior` or `MaskGITPrior`, {"codes_top": ..., "codes_bottom": ...} from a
    `hierarchical.HierarchicalPrior` (top first, then bottom given it). `temperature`, `seed` and `top_k`
    as `pixelcnn_sampling.sample_codes`; for a hierarchical prior each may also be a (top, bottom) pair. `options`
    are the prior's own sampling options (its `sample_grids_graph`'s keywords: ``fast`` for the
    autoregressive priors, ``steps``, ``choice_temperature``, ``guidance`` for MaskGIT)."""
    for t in _levels(temperature):
        check_python_args(prior, num_samples, t, None)
    for k in _levels(top_k):
        check_python_args(prior, num_samples, 1.0, k)
    labels = None if labels is None else tf.convert_to_tensor(labels)
    temperature = tf.constant(temperature, tf.float32)
    seed = tf.constant(seed, tf.int32)
    top_k = tuple(top_k) if isinstance(top_k, list) else top_k
    options = {k: v for k, v in options.items() if v is not None}
    takes = list(inspect.signature(prior.sample_grids_graph).parameters)[5:]
    if set(options) - set(takes):
        raise ValueError(
            f"A {type(prior).__name__} has no sampling option {', '.join(sorted(set(options) - set(takes)))}; "
            f"its options: {', '.join(takes) or 'none'}."
        )
    key = ("grids", top_k, tuple(sorted(options.items())), labels is not None, jit_compile)
    key += (temperature.shape.rank, seed.shape.rank)
    cache = prior.__dict__.setdefault("_sampler_cache", {})

    def per_level(x):  # a [2] tensor -> (top, bottom)
        return tuple(tf.unstack(x)) if x.shape.rank == 1 else x

    if key not in cache:
        cache[key] = tf.function(
            lambda n, t, s, y: prior.sample_grids_graph(n, per_level(t), per_level(s), y, top_k, **options),
            jit_compile=jit_compile,
            reduce_retracing=True,
        )
    return cache[key](tf.constant(num_samples, tf.int32), temperature, seed, labels)


def sample_images(prior, autoencoder, num_samples, temperature=1.0, seed=0, labels=None, top_k=None, **options):
    """Images float32 [num_samples,H,W,C] in [0,1] (NumPy): codes sampled from `prior` (as
    `sample_grids`, with its `options`), decoded by `autoencoder` (a `VQVAE` or `VQVAE2`)."""
    grids = sample_grids(prior, num_samples, temperature=temperature, seed=seed, labels=labels, top_k=top_k, **options)
    return autoencoder.decode_grids(autoencoder.from_prior_grids(grids)).numpy()
