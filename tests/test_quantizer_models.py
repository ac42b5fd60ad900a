"""The quantizer zoo through the whole system: VQVAE with each quantizer, the depth-ordered
PixelCNN for residual VQ, codes export, the prior, sampling, SavedModel and TFLite."""

import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from helpers import peaked, train_and_export_tiny

from vqvae_tf import VQVAE, PixelCNN, get_config, read_codes, sample_codes
from vqvae_tf.serving import export_tflite_lib, tflite
from vqvae_tf.training import sample_lib

QUANTIZER_FIELDS = {
    "fsq": dict(quantizer="fsq", fsq_levels=(4, 4)),
    "rvq": dict(quantizer="rvq", num_quantizers=2),
    "vq_cosine_rotation": dict(quantizer="vq", distance="cosine", gradient="rotation"),
    "lfq": dict(quantizer="lfq", embedding_dim=4),  # K = 2^4
    "bsq": dict(quantizer="bsq", embedding_dim=4),
    "simvq": dict(quantizer="simvq"),
    "ibq": dict(quantizer="ibq"),
}


def tiny(**fields):
    return dataclasses.replace(get_config("tiny"), **fields).validate()


@pytest.mark.parametrize("name", list(QUANTIZER_FIELDS))
def test_vqvae_with_each_quantizer(name):
    config = tiny(**QUANTIZER_FIELDS[name])
    model = config.build(data_variance=0.1)
    x = tf.random.stateless_uniform([4, 28, 28, 1], seed=[1, 2])
    codes = model.encode(x)
    assert codes.shape == (4, *model.codes_shape) and codes.dtype == tf.int32
    assert int(tf.reduce_max(codes)) < model.num_embeddings
    np.testing.assert_allclose(model.decode(codes).numpy(), model(x).numpy(), atol=1e-5)  # decode(encode) = call
    grid = model.to_prior_grid(codes)
    assert tuple(grid.shape[1:]) == model.prior_grid_shape == config.prior_grid_shape
    np.testing.assert_array_equal(model.from_prior_grid(grid).numpy(), codes.numpy())
    model.compile(optimizer=config.make_optimizer())
    logs = [model.train_on_batch(x, return_dict=True) for _ in range(3)]
    assert all(np.isfinite(v) for v in logs[-1].values())
    reloaded = VQVAE.from_config(model.get_config())
    assert reloaded.get_config() == model.get_config()


def test_fsq_config_derives_codes_and_channels():
    config = tiny(quantizer="fsq", fsq_levels=(8, 6, 5))
    assert (config.num_embeddings, config.embedding_dim) == (240, 3)
    model = config.build()
    assert model.quantizer.num_embeddings == 240 and model.encoder_outputs(tf.zeros([1, 28, 28, 1])).shape[-1] == 3


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(quantizer="fsq", fsq_levels=(8, 5), embedding_dim=4, num_embeddings=40), "embedding_dim=2 channels"),
        (dict(quantizer="fsq", fsq_levels=(8, 1), embedding_dim=2, num_embeddings=8), "integer >= 2"),
        (dict(quantizer="fsq", fsq_levels=(), embedding_dim=0, num_embeddings=1), "embedding_dim must be a positive"),
        (dict(quantizer="rvq", num_quantizers=0), "num_quantizers must be a positive integer"),
        (dict(quantizer="rvq", distance="cosine"), "distance='cosine' applies to the vq and ema"),
        (
            dict(quantizer="fsq", gradient="rotation", embedding_dim=4, num_embeddings=1000),
            "applies to the vq, ema and rvq quantizers, not 'fsq'",
        ),
        (dict(quantizer="ema", distance="angular"), "distance must be one of"),
        (dict(quantizer="rvq", quantizer_dropout=2.0), "quantizer_dropout must be in"),
    ],
)
def test_bad_quantizer_arguments(fields, message):
    args = {"image_shape": (28, 28, 1), "num_embeddings": 16, "embedding_dim": 8, **fields}
    with pytest.raises(ValueError, match=message):
        VQVAE(**args)


def test_decode_refuses_codes_of_the_wrong_layout():
    model = tiny(quantizer="rvq", num_quantizers=2).build()
    with pytest.raises(ValueError, match=r"codes must have shape \[B, h, w, 2\]"):
        model.decode(tf.zeros([1, 7, 7], tf.int32))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"codes must be in \[0, 16\)"):
        model.decode(tf.fill([1, 7, 7, 2], 16))


# ------------------------------------------------------------------ the depth-ordered prior


def depth_prior(depth=2, num_classes=0):
    return PixelCNN(
        num_embeddings=5,
        latent_shape=(3, 4 * depth),
        num_filters=8,
        num_layers=None,
        kernel_size=3,
        num_classes=num_classes,
        depth=depth,
    )


def test_depth_prior_is_causal_in_raster_order():
    """The logits of position p do not change when codes at p or later change, and do change
    with earlier ones (at any depth): the raster order over (row, column, depth)."""
    prior = depth_prior()
    h, w = prior.latent_shape
    rng = np.random.default_rng(0)
    base = rng.integers(0, 5, size=(1, h, w)).astype(np.int32)
    logits = prior(base).numpy().reshape(h * w, 5)
    for p in range(h * w):
        later = base.reshape(-1).copy()
        later[p:] = (later[p:] + 1) % 5
        changed = prior(later.reshape(1, h, w)).numpy().reshape(h * w, 5)
        np.testing.assert_array_equal(changed[: p + 1], logits[: p + 1], err_msg=f"position {p}")
        if p > 0:
            earlier = base.reshape(-1).copy()
            earlier[p - 1] = (earlier[p - 1] + 1) % 5
            assert not np.array_equal(prior(earlier.reshape(1, h, w)).numpy().reshape(h * w, 5)[p], logits[p])


def test_each_depth_has_its_own_embedding_and_head():
    prior = depth_prior()
    codes = tf.zeros([1, 1, 8], tf.int32)
    embedded = prior.embed(codes).numpy()[0, 0]
    table = prior.embedding.embeddings.numpy()
    np.testing.assert_allclose(embedded[0::2], np.repeat(table[0:1], 4, 0))  # depth 0: rows [0, K)
    np.testing.assert_allclose(embedded[1::2], np.repeat(table[5:6], 4, 0))  # depth 1: rows [K, 2K)
    h = tf.random.stateless_normal([1, 1, 8, 8], seed=[0, 1])
    every = tf.cast(prior.head_logits(prior.head_hidden(tf.nn.relu(h))), tf.float32).numpy()[0, 0]
    selected = prior.head(h).numpy()[0, 0]
    for column in range(8):
        depth = column % 2
        np.testing.assert_allclose(selected[column], every[column, depth * 5 : (depth + 1) * 5], rtol=1e-6)
        one = prior.head(h[:, :, column : column + 1], column=tf.constant(column)).numpy()[0, 0, 0]
        np.testing.assert_allclose(one, selected[column], rtol=1e-6, atol=1e-6)  # (summation order: 1 vs 8 columns)


@pytest.mark.parametrize("num_classes", [0, 3])
def test_depth_prior_fast_sampler_equals_plain(num_classes):
    prior = peaked(depth_prior(num_classes=num_classes))
    labels = np.arange(4) % 3 if num_classes else None
    for seed in (0, 3):
        plain = sample_codes(prior, 4, seed=seed, labels=labels, fast=False)
        fast = sample_codes(prior, 4, seed=seed, labels=labels, fast=True)
        np.testing.assert_array_equal(plain.numpy(), fast.numpy())


def test_depth_must_divide_the_grid():
    with pytest.raises(ValueError, match="multiple of depth=3"):
        PixelCNN(num_embeddings=4, latent_shape=(3, 4), num_layers=None, depth=3)


# ------------------------------------------------------------------ the stages, served and on device


# The quantizers whose codes take the prior, its SavedModel and the on-device generator a way of
# their own (FSQ: no codebook; residual VQ: a depth axis). The others' codes are one grid of
# indices into a codebook like the default's, which the prior stages treat alike: they go through
# the VQ-VAE's stages only (codes, SavedModel, TFLite encoder and decoder with frozen codebooks).
WITH_PRIOR = ("fsq", "rvq")


@pytest.fixture(scope="module", params=["fsq", "rvq", "lfq", "bsq", "simvq", "ibq"])
def run(request, tmp_path_factory):
    """A tiny VQ-VAE with the quantizer, its codes, SavedModels; a conditional prior on the codes
    (and its SavedModel) for `WITH_PRIOR`."""
    root = tmp_path_factory.mktemp(request.param)
    with_prior = request.param in WITH_PRIOR
    return dict(
        train_and_export_tiny(
            str(root), prior_num_layers=None, with_prior=with_prior, **QUANTIZER_FIELDS[request.param]
        ),
        name=request.param,
        root=root,
    )


def test_codes_export_writes_the_prior_grid(run):
    vqvae, meta = run["vqvae"], run["meta"]
    assert meta["latent_shape"] == list(vqvae.prior_grid_shape)
    assert meta["depth"] == vqvae.codes_per_position and meta["codes_shape"] == list(vqvae.codes_shape)
    assert meta["quantizer"] == run["name"] and meta["num_embeddings"] == vqvae.num_embeddings
    codes, _ = next(iter(read_codes(os.path.join(run["workdir"], "codes"), "test").batch(10)))
    x = np.concatenate([b for b, _ in vqvae_test_images(run)])
    np.testing.assert_array_equal(codes.numpy(), vqvae.to_prior_grid(vqvae.encode(x)).numpy())
    if run["prior"] is not None:
        assert run["prior"].depth == vqvae.codes_per_position
    metrics = json.load(open(os.path.join(run["workdir"], "vqvae", "metrics.json")))
    expected_bits = np.prod(vqvae.codes_shape) * np.log2(vqvae.num_embeddings)
    assert metrics["code_bits_per_image"] == pytest.approx(expected_bits)


def vqvae_test_images(run):
    from vqvae_tf import data

    return data.load("mnist", "test", data_dir=run["data_dir"]).batch(10).as_numpy_iterator()


def test_savedmodels_serve_the_models_codes(run):
    vqvae, prior = run["vqvae"], run["prior"]
    x = np.random.default_rng(0).uniform(size=(3, 28, 28, 1)).astype(np.float32)
    codes = run["vq_sm"].signatures["encode"](images=x)["codes"]
    assert codes.shape == (3, *vqvae.codes_shape)
    np.testing.assert_array_equal(codes.numpy(), vqvae.encode(x).numpy())
    images = run["vq_sm"].signatures["decode"](codes=codes)["images"]
    np.testing.assert_allclose(images.numpy(), vqvae.decode(codes).numpy(), atol=1e-5)
    with pytest.raises(tf.errors.InvalidArgumentError, match=rf"codes must be in \[0, {vqvae.num_embeddings}\)"):
        run["vq_sm"].signatures["decode"](codes=codes + vqvae.num_embeddings)
    if prior is None:
        return
    out = run["prior_sm"].signatures["serving_default"](
        num_samples=tf.constant(2), temperature=tf.constant(1.0), seed=tf.constant(4), labels=tf.constant([0, 1])
    )
    assert out["codes"].shape == (2, *vqvae.codes_shape)
    np.testing.assert_array_equal(
        out["codes"].numpy(),
        vqvae.from_prior_grid(sample_codes(prior, 2, seed=4, labels=np.array([0, 1], np.int32))).numpy(),
    )
    np.testing.assert_allclose(out["images"].numpy(), vqvae.decode(out["codes"]).numpy(), atol=1e-5)
    lp = run["prior_sm"].signatures["log_prob"](codes=out["codes"], labels=tf.constant([0, 1]))
    want = prior.log_prob(vqvae.to_prior_grid(out["codes"]), tf.constant([0, 1]))
    np.testing.assert_allclose(lp["log_prob"].numpy(), want.numpy(), rtol=1e-5)


def test_tflite_parity_and_builtin_only(run):
    out = str(run["root"] / "tflite_export")
    report = export_tflite_lib.export_tflite_stage(
        run["workdir"], out, ["float32"], run["data_dir"], num_test_images=10
    )
    r = report["models"]["float32"]
    assert r["decoder_max_abs_error"] <= 1e-4 and r["encoder_code_agreement"] == 1.0
    kinds = ("decoder", "encoder", "generator") if run["prior"] is not None else ("decoder", "encoder")
    for kind in kinds:
        ops = tflite.op_names(open(os.path.join(out, "tflite", f"{kind}_float32.tflite"), "rb").read())
        assert not [op for op in ops if op.startswith("Flex") or op in ("CUSTOM", "VAR_HANDLE")], (kind, ops)
    if run["prior"] is None:
        assert "generator" not in report
        return
    gen = report["generator"]["float32"]
    assert gen["converted"] and gen["code_agreement_vs_tensorflow"] == 1.0
    data = open(os.path.join(out, "tflite", "generator_float32.tflite"), "rb").read()
    h, w = run["prior"].latent_shape
    got = tflite.run_signature(
        data,
        "generate",
        uniforms=np.full((2, h * w), 0.5, np.float32),
        temperature=np.float32(1.0),
        labels=np.array([0, 1], np.int32),
    )
    assert got["codes"].shape == (2, *run["vqvae"].codes_shape)
    np.testing.assert_allclose(got["images"], run["vqvae"].decode(got["codes"]).numpy(), atol=1e-5)


def test_sample_script_library(run, tmp_path):
    path = str(tmp_path / "samples.png")
    if run["prior"] is None:  # (WITH_PRIOR): the refusal names the missing stage
        with pytest.raises(FileNotFoundError, match="No trained prior in .* Run train.train_prior first"):
            sample_lib.write_samples(run["workdir"], path, 4, labels=["1"])
        return
    labels = sample_lib.write_samples(run["workdir"], path, 4, labels=["1"])
    assert os.path.getsize(path) > 0 and list(labels) == [1, 1, 1, 1]
