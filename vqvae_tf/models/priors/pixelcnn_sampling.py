"""Ancestral sampling of code grids from a `PixelCNN`, as one compiled graph.

Both samplers are a `tf.while_loop` over positions; each code is the inverse CDF at a seeded
uniform of (seed, position) (`vqvae_tf.utils.hash_random`), so they run inside a SavedModel
signature and under ``jit_compile``, and pick the same codes with and without XLA:

- plain: the whole network on the whole grid at every position (h*w full passes);
- fast (default): per-layer caches (Ramachandran et al. 2017, "Fast Generation for Convolutional
  Autoregressive Models"): each gated block is evaluated only on a k-wide window around the new
  position (horizontal stack) or the newly completed row (vertical stack), from cached inputs, so
  the whole sample costs about one pass of the network over the grid instead of h*w passes.
  Same seed -> the same codes as the plain sampler.
"""

from __future__ import annotations

import tensorflow as tf

from vqvae_tf.layers.masked_conv import gate
from vqvae_tf.models.priors import sampling
from vqvae_tf.utils import checks


def sample_codes_graph(prior, num_samples, temperature, seed, labels=None, top_k=None, fast=True, condition=None):
    """The sampler as TF ops (for use inside a traced function / SavedModel endpoint).

    num_samples: int32 scalar tensor; temperature: float32 scalar (> 0, asserted); seed: int32
    scalar; labels: int32 [num_samples] or None; top_k: Python int or None; condition: int32
    ``[num_samples, *prior.condition_shape]`` for a spatially conditioned prior, else None.
    Returns int32 codes [num_samples, h, w]. A prior with attention samples with the plain sampler.
    """
    h, w = prior.latent_shape
    num_samples = tf.convert_to_tensor(num_samples, tf.int32)
    temperature = tf.convert_to_tensor(temperature, tf.float32)
    seed = tf.cast(seed, tf.int32)
    num_samples = checks.require(num_samples, num_samples > 0, "num_samples must be > 0, got", num_samples)
    temperature = checks.require(temperature, temperature > 0, "temperature must be > 0, got", temperature)
    labels = prior.check_labels(labels, num_samples)
    condition = prior.check_condition(condition, num_samples)
    codes = tf.zeros(tf.stack([num_samples, h, w]), tf.int32)
    codes = tf.ensure_shape(codes, [None, h, w])

    if not fast or prior.has_attention:

        def body(position, codes):
            logits = prior.logits_from_embeddings(prior.embed(codes), labels, condition=condition)
            logits = tf.reshape(logits, [-1, h * w, prior.num_embeddings])[:, position]
            return position + 1, sampling.place(
                codes, position, sampling.pick(logits, temperature, seed, position, top_k)
            )

        _, codes = tf.while_loop(lambda p, c: p < h * w, body, [tf.constant(0), codes])
        return codes

    return _cached_sampler(
        prior,
        codes,
        labels,
        lambda logits, position: sampling.pick(logits, temperature, seed, position, top_k),
        condition,
    )


def _dense(x, kernel):
    """x [..., C] @ kernel [C, D] as one 2-D MatMul. On tiny operands oneDNN's batched matmul,
    einsum and convolution kernels cost tens of microseconds per call on CPU and a 2-D MatMul a
    few (BENCHMARKS.md section 3), so everything the sampler runs per position or per row is
    written as 2-D MatMuls."""
    if x.shape.rank == 2:
        return tf.matmul(x, kernel)
    shape = tf.shape(x)
    y = tf.matmul(tf.reshape(x, [-1, x.shape[-1]]), kernel)
    return tf.reshape(y, tf.concat([shape[:-1], [kernel.shape[-1]]], 0))


def _kernel(conv, dtype):
    return tf.cast(conv.kernel, dtype)


def _horizontal_weights(block, dtype):
    """A gated block's horizontal stack as matrices (read once per sampling call, outside the
    loops): the masked 1 x k kernel's taps that the mask keeps, flattened to [(p + 1) F, 2F]
    (columns j-p .. j; the first block's "A" mask drops the current column: [p F, 2F]), the
    link's and the output's 1x1 kernels, and the biases."""
    p = block.kernel_size // 2
    kernel = _kernel(block.h_conv, dtype)[0] * tf.cast(block.h_conv._mask[0], dtype)  # [k, F, 2F]
    taps = kernel[:p] if block.first else kernel[: p + 1]
    return {
        "taps": tf.reshape(taps, [-1, taps.shape[-1]]),
        "link": _kernel(block.v_to_h, dtype)[0, 0],
        "bias": tf.cast(block.h_conv.bias, dtype) + tf.cast(block.v_to_h.bias, dtype),
        "out": _kernel(block.h_out, dtype)[0, 0],
        "out_bias": tf.cast(block.h_out.bias, dtype),
    }


def _vertical_weights(block, dtype):
    """A gated block's vertical stack: its kernel's rows that the "V" mask keeps (the p rows above
    and the current one: [p + 1, k, F, 2F]), the bias, and the output's 1x1 kernel (only for
    blocks that have one)."""
    p = block.kernel_size // 2
    kernel = _kernel(block.v_conv, dtype) * tf.cast(block.v_conv._mask, dtype)
    weights = {"kernel": kernel[: p + 1], "bias": tf.cast(block.v_conv.bias, dtype)}
    if block.v_out is not None:
        weights.update(out=_kernel(block.v_out, dtype)[0, 0], out_bias=tf.cast(block.v_out.bias, dtype))
    return weights


def _vertical_row(block, weights, window, cond, im2col):
    """`block.vertical` on the rows the mask keeps: window [N, p + 1, w + 2p, F] (rows i-p .. i,
    p zero columns either side) -> (v_pre [N,1,w,2F], v_next [N,1,w,F] or None). The k x k
    convolution is one MatMul over the row's patches with `im2col` (fast in TensorFlow, where a
    convolution of a few rows costs tens of microseconds), else a convolution (fast in LiteRT)."""
    p = block.kernel_size // 2
    kernel = weights["kernel"]
    if im2col:
        w = window.shape[2] - 2 * p
        patches = tf.concat(
            [window[:, dy, dx : dx + w] for dy in range(p + 1) for dx in range(block.kernel_size)], axis=-1
        )  # [N, w, (p + 1) k F], in the order of the kernel's taps
        v_pre = _dense(patches, tf.reshape(kernel, [-1, kernel.shape[-1]]))[:, None]
    else:
        v_pre = tf.nn.conv2d(window, kernel, strides=1, padding="VALID")
    v_pre = v_pre + weights["bias"] + cond
    if block.last:
        return v_pre, None
    gated = gate(v_pre)
    if block.v_out is None:
        return v_pre, gated
    return v_pre, window[:, p:, p:-p] + _dense(gated, weights["out"]) + weights["out_bias"]


def _head_weights(prior, dtype):
    return [
        (_kernel(layer, dtype)[0, 0], tf.cast(layer.bias, dtype)) for layer in (prior.head_hidden, prior.head_logits)
    ]


def _head(prior, weights, x, column):
    """`prior.head` for one position: x [N, F] of grid column `column` -> logits float32 [N, K]."""
    (hidden, hidden_bias), (out, out_bias) = weights
    logits = tf.matmul(tf.nn.relu(tf.matmul(tf.nn.relu(x), hidden) + hidden_bias), out) + out_bias
    return prior.select_depth(tf.cast(logits, tf.float32), column)


def _cached_sampler(prior, codes, labels, pick, condition=None, im2col=True):
    """Ancestral sampling with per-layer caches (Ramachandran et al. 2017), as 2-D matmuls.

    Rows are unrolled at trace time; within a row a `tf.while_loop` runs over the columns. The
    horizontal stack runs once per position and needs, per block, only its inputs at the
    p = k // 2 columns before the current one (the masked 1 x k kernel sees nothing else): those
    live in a shift register [N, L, p F]; a block's pre-activation is one matmul of its past
    columns and current input with its kernel's taps, plus the row's bias (the links from the
    vertical stack through v_to_h, one matmul per row, the biases and the class embedding), and
    its output projection another. Once a row is complete, the vertical stack runs on it and the
    p rows above (all its "V" mask sees: one matmul over the row's patches, or with `im2col=False`,
    for LiteRT, a convolution) and gives the next row's links. So a position costs the same whatever the grid's size (nothing of grid size is
    touched per position or per row), and the arithmetic is the network's: the same seed gives
    the same codes as the plain sampler. Class and spatial conditioning are computed once, before
    the loops (the conditioning grid is known in full), and enter each row's bias and vertical
    update.
    """
    h, w = prior.latent_shape
    p = prior.kernel_size // 2
    f = prior.num_filters
    n = tf.shape(codes)[0]
    blocks = prior.blocks
    num_blocks = len(blocks)
    dtype = prior.compute_dtype  # caches in the compute dtype (bfloat16 / float16 under mixed precision)
    weights = [_horizontal_weights(block, dtype) for block in blocks]
    vertical = [_vertical_weights(block, dtype) for block in blocks]
    head = _head_weights(prior, dtype)
    # Per block, the conditioning's halves: 0, [N, 1, 1, 2F] (class) or [N, h, w, 2F] (spatial);
    # `row_of(c, i)` is what row i sees of one: vertical [N, 1, w or 1, 2F], horizontal [N, w or 1, 2F].
    conditioning = [(tf.cast(v, dtype), tf.cast(hz, dtype)) for v, hz in prior.conditioning(labels, condition)]
    spatial = prior.condition_shape is not None

    def row_of(c, i):
        return c[:, i : i + 1] if spatial and c.shape.rank == 4 else c

    pad_columns = [[0, 0], [0, 0], [p, p], [0, 0]]
    # Per block, its vertical-stack input rows so far ([N, 1, w + 2p, F], zero-padded by p columns),
    # starting with the p zero rows above the grid; and the links into the current row.
    zero_row = tf.zeros(tf.stack([n, 1, w + 2 * p, f]), dtype)
    v_rows = [[zero_row] * p for _ in blocks]
    links = [tf.zeros(tf.stack([n, w, 2 * f]), dtype) for _ in blocks]
    rows = []
    for i in range(h):
        # Per block, everything of row i that does not depend on the row's own codes: [N, w, L, 2F].
        row_bias = tf.stack(
            [
                _dense(link, wt["link"]) + wt["bias"] + _squeeze_row(row_of(c, i))
                for link, wt, (_, c) in zip(links, weights, conditioning)
            ],
            axis=2,
        )

        def col_body(j, row_codes, history, i=i, row_bias=row_bias):
            # history [N, L, p F]: each block's inputs at columns j-p .. j-1 (zeros left of the row).
            bias = tf.gather(row_bias, j, axis=1)  # [N, L, 2F]
            x, inputs = None, []
            for k, (block, wt) in enumerate(zip(blocks, weights)):
                seen = history[:, k]
                if not block.first:  # the "B" mask also sees the current column; the first block's "A" mask does not
                    inputs.append(x)
                    seen = tf.concat([seen, x], axis=1)
                out = tf.matmul(gate(tf.matmul(seen, wt["taps"]) + bias[:, k]), wt["out"]) + wt["out_bias"]
                x = out if block.first else x + out
            position = i * w + j
            code = pick(_head(prior, head, x, j), position)
            # Shift the register by one column: block 0's input is the new code's embedding.
            newest = tf.stack([tf.cast(prior.embed(code[:, None], column=j)[:, 0], dtype), *inputs], axis=1)
            history = tf.concat([history[:, :, f:], newest], axis=2) if p > 1 else newest
            return j + 1, row_codes + code[:, None] * tf.one_hot(j, w, dtype=tf.int32), history

        _, row_codes, _ = tf.while_loop(
            lambda j, *_: j < w,
            col_body,
            [tf.constant(0), tf.zeros(tf.stack([n, w]), tf.int32), tf.zeros(tf.stack([n, num_blocks, p * f]), dtype)],
        )
        rows.append(row_codes)
        if i == h - 1:
            break
        # Row i is complete: the vertical stack on it and the p rows above gives row i + 1's links.
        v_rows[0].append(tf.pad(tf.cast(prior.embed(row_codes), dtype)[:, None], pad_columns))
        for k, block in enumerate(blocks):
            window = tf.concat(v_rows[k][-(p + 1) :], axis=1)  # rows i-p .. i: all the "V" mask sees
            v_pre, v_next = _vertical_row(block, vertical[k], window, row_of(conditioning[k][0], i), im2col)
            links[k] = v_pre[:, 0]
            if v_next is not None:
                v_rows[k + 1].append(tf.pad(v_next, pad_columns))
    return tf.stack(rows, axis=1)


def _squeeze_row(c):
    """A conditioning half as seen by one row ([N, 1, w or 1, 2F], or a scalar) -> [N, w or 1, 2F]."""
    return c[:, 0] if c.shape.rank == 4 else c


def sample_codes(
    prior,
    num_samples: int,
    temperature: float = 1.0,
    seed: int = 0,
    labels=None,
    top_k=None,
    fast: bool = True,
    jit_compile: bool = False,
    condition=None,
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
      condition: int ``[num_samples, *prior.condition_shape]`` codes of a spatially conditioned prior.
    """
    sampling.check_python_args(prior, num_samples, temperature, top_k)
    labels = None if labels is None else tf.convert_to_tensor(labels)
    condition = None if condition is None else tf.convert_to_tensor(condition)
    key = (top_k, fast, labels is not None, condition is not None, jit_compile)
    cache = prior.__dict__.setdefault("_sampler_cache", {})
    if key not in cache:
        cache[key] = tf.function(
            lambda n, t, s, y, c: sample_codes_graph(prior, n, t, s, y, top_k=top_k, fast=fast, condition=c),
            jit_compile=jit_compile,
            reduce_retracing=True,
        )
    return cache[key](
        tf.constant(num_samples, tf.int32),
        tf.constant(temperature, tf.float32),
        tf.constant(seed, tf.int32),
        labels,
        condition,
    )


def sample_codes_from_uniforms_graph(prior, uniforms, temperature, labels=None, fast=True, condition=None):
    """Ancestral sampling driven by caller-supplied random numbers (for on-device generators,
    where random ops are not builtins): uniforms float32 [N, h*w] in [0, 1), one per position;
    each code is the inverse CDF of softmax(logits / temperature) at its uniform. `fast`: the
    cached sampler (default), else the whole network per position. Returns int32 codes [N, h, w]."""
    h, w = prior.latent_shape
    k = prior.num_embeddings
    n = tf.shape(uniforms)[0]
    codes = tf.zeros(tf.stack([n, h, w]), tf.int32)

    def pick(logits, position):
        return sampling.inverse_cdf(logits / temperature, tf.gather(uniforms, position, axis=1))

    if fast and not prior.has_attention:  # LiteRT runs the vertical stack's convolutions faster than im2col
        return _cached_sampler(prior, codes, labels, pick, condition, im2col=False)

    def body(position, codes):
        logits = tf.reshape(
            prior.logits_from_embeddings(prior.embed(codes), labels, condition=condition), [n, h * w, k]
        )
        return position + 1, sampling.place(codes, position, pick(tf.gather(logits, position, axis=1), position))

    _, codes = tf.while_loop(lambda p, c: p < h * w, body, [tf.constant(0), codes])
    return codes
