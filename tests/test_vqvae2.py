"""VQ-VAE-2: the two-level model, its hierarchical prior, sampling, exports and the pipeline."""

import dataclasses
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import fake_mnist_dir, fashion_mnist_arrays, image_folder, warmup_requests

from vqvae_tf import VQVAE2, HierarchicalPrior, PixelCNN, configs, get_config, sample_grids
from vqvae_tf.models.priors.pixelcnn_sampling import sample_codes
from vqvae_tf.serving import tflite

K = 12


def tiny_model(**kw):
    keras.utils.set_random_seed(0)
    args = dict(
        image_shape=(16, 16, 1),
        num_embeddings=K,
        embedding_dim=4,
        num_hiddens=8,
        num_residual_hiddens=4,
        num_residual_layers=1,
        kmeans_init=False,
    )
    return VQVAE2(**{**args, **kw})


def tiny_prior(num_classes=0, attention_blocks=0, top=(2, 2), bottom=(4, 4)):
    keras.utils.set_random_seed(1)
    prior = HierarchicalPrior(
        K, top, bottom, num_filters=8, num_layers=None, kernel_size=3, num_classes=num_classes,
        attention_blocks=attention_blocks,
    )  # fmt: skip
    # Random biases too, so that every path (conditioning included) carries signal.
    for v in prior.weights:
        v.assign(tf.random.normal(v.shape, stddev=0.3, seed=7))
    return prior


# ------------------------------------------------------------------ the model


@pytest.mark.parametrize(
    "name, image, top, bottom",
    [
        ("vqvae2_64", (64, 64, 3), (8, 8), (16, 16)),
        ("vqvae2_128", (128, 128, 3), (16, 16), (32, 32)),
        ("vqvae2_256", (256, 256, 3), (32, 32), (64, 64)),
        ("vqvae2_tiny", (32, 32, 1), (4, 4), (8, 8)),
    ],
)
def test_config_grids(name, image, top, bottom):
    config = get_config(name)
    assert isinstance(config, configs.VQVAE2Config) and config.model == "vqvae2"
    assert tuple(config.image_shape) == image and config.total_downsample == 8
    assert config.prior_grids() == {"codes_top": top, "codes_bottom": bottom}
    assert configs.config_from_dict(config.to_dict()) == config
    if name == "vqvae2_64":  # the paper's widths, built; encode one image
        model = config.build()
        assert model.code_grids == {"codes_top": top, "codes_bottom": bottom}
        codes = model.encode_grids(tf.zeros([1, *image]))
        assert {k: tuple(v.shape) for k, v in codes.items()} == {"codes_top": (1, *top), "codes_bottom": (1, *bottom)}
        assert model.code_bits_per_image == (64 + 256) * 9


def test_model_flag_and_config_mismatch():
    assert get_config(model="vqvae2").name == "vqvae2_64"
    assert get_config(model="vqvae").name == "fashion_mnist"
    with pytest.raises(ValueError, match="'fashion_mnist' is a vqvae config, not a vqvae2 one"):
        get_config("fashion_mnist", "vqvae2")
    recipe = configs.get_recipe("quick", model="vqvae2")
    assert recipe.vqvae.model == "vqvae2" and recipe.prior.num_layers is None


def test_bad_arguments():
    with pytest.raises(ValueError, match="not divisible by downsample \\* top_downsample = 8"):
        tiny_model(image_shape=(20, 20, 1))
    with pytest.raises(ValueError, match="top_downsample must be one of"):
        tiny_model(top_downsample=3)
    model = tiny_model()
    with pytest.raises(ValueError, match="codes_top must have shape \\[B, 2, 2\\]"):
        model.decode(tf.zeros([1, 4, 4], tf.int32), tf.zeros([1, 4, 4], tf.int32))
    with pytest.raises(tf.errors.InvalidArgumentError, match="codes must be in"):
        model.decode(tf.fill([1, 2, 2], K), tf.zeros([1, 4, 4], tf.int32))
    with pytest.raises(tf.errors.InvalidArgumentError, match="same batch size"):
        model.decode(tf.zeros([1, 2, 2], tf.int32), tf.zeros([2, 4, 4], tf.int32))
    with pytest.raises(ValueError, match="images"):
        model.encode(tf.zeros([1, 16, 8, 1]))


def test_forward_matches_a_numpy_reference_of_the_losses():
    model = tiny_model(commitment_cost=0.25)
    x = tf.random.uniform([3, 16, 16, 1], seed=3)
    out = model.forward(x, training=False)
    assert out["indices_top"].shape == (3, 2, 2) and out["indices_bottom"].shape == (3, 4, 4)
    # Each level: its codes are the nearest codebook rows of its own input, and the commitment
    # loss is beta * mean ||z_e - e||^2 of that input.
    features = model.encoder_bottom(x - 0.5)
    z_top = model.encoder_top(features).numpy()
    cb_top = model.quantizer_top.codebook.numpy()
    nearest_top = np.argmin(((z_top[..., None, :] - cb_top) ** 2).sum(-1), -1)
    np.testing.assert_array_equal(out["indices_top"].numpy(), nearest_top)
    np.testing.assert_allclose(
        out["commitment_loss_top"].numpy(), 0.25 * np.mean((z_top - cb_top[nearest_top]) ** 2), rtol=1e-4
    )
    z_bottom = model._bottom_inputs(features, cb_top[nearest_top]).numpy()
    cb_bottom = model.quantizer_bottom.codebook.numpy()
    nearest_bottom = np.argmin(((z_bottom[..., None, :] - cb_bottom) ** 2).sum(-1), -1)
    np.testing.assert_array_equal(out["indices_bottom"].numpy(), nearest_bottom)
    np.testing.assert_allclose(
        out["commitment_loss_bottom"].numpy(), 0.25 * np.mean((z_bottom - cb_bottom[nearest_bottom]) ** 2), rtol=1e-4
    )
    losses = model.compute_losses(x, training=False)
    mse = np.mean((out["mean"].numpy() - x.numpy()) ** 2)
    np.testing.assert_allclose(losses["reconstruction_loss"].numpy(), mse, rtol=1e-5)  # data_variance 1
    want = mse + sum(
        losses[f"{k}_{lv}"].numpy() for k in ("codebook_loss", "commitment_loss") for lv in ("top", "bottom")
    )
    np.testing.assert_allclose(losses["loss"].numpy(), want, rtol=1e-5)
    for level in ("top", "bottom"):
        used = len(np.unique(out[f"indices_{level}"].numpy()))
        np.testing.assert_allclose(losses[f"usage_{level}"].numpy(), used / K)
    # decode(encode(x)) is the forward pass's reconstruction.
    np.testing.assert_allclose(model.decode(*model.encode(x)).numpy(), out["reconstructions"].numpy(), atol=1e-6)


def test_train_step_reports_each_level_and_trains_both_encoders():
    model = tiny_model(kmeans_init=True)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    x = tf.random.uniform([8, 16, 16, 1], seed=4)
    before = {v.path: v.numpy().copy() for v in model.trainable_variables}
    logs = {k: float(v) for k, v in model.train_step(x).items()}
    assert set(logs) == {
        "loss", "reconstruction_loss", "restarts",
        *(f"{k}_{lv}" for k in ("codebook_loss", "commitment_loss", "perplexity", "usage") for lv in ("top", "bottom")),
    }  # fmt: skip
    moved = {v.path for v in model.trainable_variables if not np.array_equal(before[v.path], v.numpy())}
    for part in ("encoder_bottom", "encoder_top", "decoder_top", "pre_quantizer_bottom", "upsample_top", "decoder"):
        assert any(f"/{part}/" in p for p in moved), f"{part} got no gradient"
    # Each level's perplexity is exp(entropy) of the codes that step assigns: those `encode` gives
    # just before it (NumPy reference); the logged value is the mean over the steps so far.
    grids = [g.numpy() for g in model.encode(x)]
    after = {k: float(v) for k, v in model.train_step(x).items()}
    for level, grid in zip(("top", "bottom"), grids):
        p = np.bincount(grid.reshape(-1), minlength=model.num_embeddings) / grid.size
        want = np.exp(-(p[p > 0] * np.log(p[p > 0])).sum())
        np.testing.assert_allclose(after[f"perplexity_{level}"], (logs[f"perplexity_{level}"] + want) / 2, rtol=1e-5)


def test_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = tiny_model(kmeans_init=True)
        model.compile(optimizer="adam")
        x = tf.random.uniform([8, 16, 16, 1], seed=6)
        logs = tf.function(model.train_step)(x)
        assert all(np.isfinite(float(v)) for v in logs.values())
        assert model.quantizer_top.codebook.dtype == tf.float32
        assert model.decode(*model.encode(x)).dtype == tf.float32
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_mirrored_train_step_equals_single_replica(mirrored):
    """A 2-replica step on a split batch = a 1-replica step on the whole batch (both EMA levels)."""
    images = tf.random.stateless_uniform([8, 16, 16, 1], seed=[3, 4])

    def make():
        model = tiny_model(dead_code_threshold=0.0)
        model.compile(optimizer="adam")
        model.optimizer.build(model.trainable_variables)
        return model

    single = make()
    for _ in range(2):
        tf.function(single.train_step)(images)
    with mirrored.scope():
        multi = make()  # the same seed: the same initial weights
    it = iter(mirrored.experimental_distribute_dataset(tf.data.Dataset.from_tensors(images).repeat(2)))

    @tf.function
    def step(batch):
        mirrored.run(multi.train_step, args=(batch,))

    for _ in range(2):
        step(next(it))
    for a, b in zip(single.weights, multi.weights, strict=True):
        for local in mirrored.experimental_local_results(b.value):
            np.testing.assert_allclose(local.numpy(), a.numpy(), rtol=2e-4, atol=2e-5, err_msg=a.path)


def test_keras_round_trip(tmp_path):
    model = tiny_model()
    path = str(tmp_path / "m.keras")
    model.save(path)
    clone = keras.models.load_model(path)
    x = tf.random.uniform([2, 16, 16, 1], seed=5)
    for a, b in zip(model.encode(x), clone.encode(x)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


# ------------------------------------------------------------------ the priors


def _dependency(fn, inputs):
    """dep[p, q]: whether output position p (raster order) has a non-zero gradient w.r.t. input q."""
    n_out = None
    rows = []
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(inputs)
        out = fn(inputs)
        n_out = out.shape[1] * out.shape[2]
        flat = tf.reshape(tf.reduce_sum(out, -1), [-1, n_out])
        parts = [flat[:, p] for p in range(n_out)]
    for p in range(n_out):
        g = tape.gradient(parts[p], inputs)
        rows.append(np.abs(g.numpy()).sum(-1).reshape(-1) > 0)
    return np.array(rows)


@pytest.mark.parametrize("attention_blocks", [0, 1])
def test_top_prior_is_causal(attention_blocks):
    prior = tiny_prior(attention_blocks=attention_blocks, top=(3, 3), bottom=(6, 6))
    x = tf.random.normal([1, 3, 3, 8])
    dep = _dependency(lambda e: prior.top.logits_from_embeddings(e), x)
    for p in range(9):
        assert not dep[p, p:].any(), f"top position {p} sees itself or later codes"
        assert dep[p, :p].all(), f"top position {p} misses earlier codes"


def test_bottom_prior_sees_all_top_codes_and_only_earlier_bottom_codes():
    prior = tiny_prior(top=(2, 2), bottom=(4, 4))
    bottom = prior.bottom
    x = tf.random.normal([1, 4, 4, 8])
    top_codes = tf.constant([[[1, 5], [7, 2]]])
    dep = _dependency(lambda e: bottom.logits_from_embeddings(e, condition=top_codes), x)
    for p in range(16):
        assert not dep[p, p:].any() and dep[p, :p].all(), f"bottom position {p}"
    # Every bottom position depends on every top code (the conditioning stack spans the grid).
    emb = bottom.condition_embedding(top_codes)

    def from_condition(e):
        features = bottom.conditioning_stack(e)
        conditioning = [block.conditioning(None, features) for block in bottom.blocks]
        z = bottom.embed(tf.zeros([1, 4, 4], tf.int32))
        return bottom.horizontal_logits(z, bottom.vertical_links(z, conditioning), conditioning)

    dep_top = _dependency(from_condition, emb)
    assert dep_top.shape == (16, 4) and dep_top.all()
    # And changing the top codes changes the bottom logits.
    codes = tf.zeros([1, 4, 4], tf.int32)
    a = bottom(codes, condition=top_codes)
    b = bottom(codes, condition=tf.constant([[[1, 5], [7, 3]]]))
    assert np.abs(a.numpy() - b.numpy()).max() > 1e-3


def _top_reach(bottom, position):
    """bool [ht, wt]: the top codes whose embedding moves the bottom logits at `position` (row, col)."""
    ht, wt = bottom.condition_shape
    emb = bottom.condition_embedding(tf.zeros([1, ht, wt], tf.int32))
    z = bottom.embed(tf.zeros([1, *bottom.latent_shape], tf.int32))
    with tf.GradientTape() as tape:
        tape.watch(emb)
        features = bottom.conditioning_stack(emb)
        conditioning = [block.conditioning(None, features) for block in bottom.blocks]
        logits = bottom.horizontal_logits(z, bottom.vertical_links(z, conditioning), conditioning)
        picked = tf.reduce_sum(logits[0, position[0], position[1]])
    return np.abs(tape.gradient(picked, emb).numpy()[0]).sum(-1) > 0


@pytest.mark.parametrize("name", ["vqvae2_64", "vqvae2_128", "vqvae2_256"])
def test_bottom_prior_conditioning_reach_on_the_real_grids(name):
    """The conditioning stack's reach is local (README, prior.py): on every config's grids the first
    bottom position sees the 4 x 4 window of top codes at its corner (rows 0-3, columns 0-3), not
    the whole top grid. Positive weights, so that no ReLU path is dead and the gradient shows the
    structural reach (random signed weights hide parts of it)."""
    grids = configs.get_config(name).prior_grids()
    prior = HierarchicalPrior(
        K, grids["codes_top"], grids["codes_bottom"], num_filters=4, num_layers=None, kernel_size=5
    )
    for v in prior.weights:
        v.assign(tf.abs(tf.random.normal(v.shape, stddev=0.1, seed=5)))
    first = _top_reach(prior.bottom, (0, 0))
    window = np.zeros_like(first)
    window[:4, :4] = True
    np.testing.assert_array_equal(first, window)


def test_log_prob_is_the_sum_of_the_levels_and_matches_numpy():
    prior = tiny_prior(num_classes=3)
    top = tf.random.uniform([2, 2, 2], 0, K, tf.int32, seed=1)
    bottom = tf.random.uniform([2, 4, 4], 0, K, tf.int32, seed=2)
    labels = tf.constant([0, 2])
    logits = prior({"codes_top": top, "codes_bottom": bottom}, labels)

    def nats(lg, codes):
        lg = lg.numpy().astype(np.float64)
        lsm = lg - np.log(np.exp(lg - lg.max(-1, keepdims=True)).sum(-1, keepdims=True)) - lg.max(-1, keepdims=True)
        return np.take_along_axis(lsm, codes.numpy()[..., None], -1)[..., 0].sum((1, 2))

    want = nats(logits["codes_top"], top) + nats(logits["codes_bottom"], bottom)
    np.testing.assert_allclose(prior.log_prob(top, bottom, labels).numpy(), want, rtol=1e-5)
    bits = prior.bits_per_code(prior.log_prob(top, bottom, labels)).numpy()
    np.testing.assert_allclose(bits, -want / (20 * np.log(2)), rtol=1e-5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="condition codes must be in"):
        prior.bottom(bottom, labels, condition=tf.fill([2, 2, 2], K))


def test_prior_train_step_reports_each_level():
    prior = tiny_prior()
    prior.compile(optimizer="adam")
    top = tf.random.uniform([4, 2, 2], 0, K, tf.int32, seed=1)
    bottom = tf.random.uniform([4, 4, 4], 0, K, tf.int32, seed=2)
    logs = {
        k: float(v) for k, v in prior.train_step(({"codes_top": top, "codes_bottom": bottom}, tf.zeros([4]))).items()
    }
    assert np.isclose(logs["bits_per_code"], (4 * logs["bits_per_code_top"] + 16 * logs["bits_per_code_bottom"]) / 20)


def test_sampling_is_deterministic_and_the_cached_sampler_equals_the_plain_one():
    # (A top prior with attention samples with the plain sampler: the `trained` fixture's prior.)
    prior = tiny_prior(num_classes=3, top=(2, 3), bottom=(4, 6))
    labels = [0, 1, 2]
    a = sample_grids(prior, 3, seed=5, labels=labels)
    b = sample_grids(prior, 3, seed=5, labels=labels)
    plain = sample_grids(prior, 3, seed=5, labels=labels, fast=False)
    other = sample_grids(prior, 3, seed=6, labels=labels)
    for name in ("codes_top", "codes_bottom"):
        np.testing.assert_array_equal(a[name].numpy(), b[name].numpy())
        np.testing.assert_array_equal(a[name].numpy(), plain[name].numpy())
    assert any((a[n].numpy() != other[n].numpy()).any() for n in a)
    # The bottom level is the bottom prior sampled given the top codes, with seed + 1.
    bottom = sample_codes(prior.bottom, 3, seed=6, labels=labels, condition=a["codes_top"])
    np.testing.assert_array_equal(a["codes_bottom"].numpy(), bottom.numpy())
    # Per-level temperature and seeds.
    pair = sample_grids(prior, 3, seed=(5, 9), temperature=(1.0, 0.5), labels=labels)
    np.testing.assert_array_equal(pair["codes_top"].numpy(), a["codes_top"].numpy())
    low = sample_codes(prior.bottom, 3, temperature=0.5, seed=9, labels=labels, condition=a["codes_top"])
    np.testing.assert_array_equal(pair["codes_bottom"].numpy(), low.numpy())


def test_spatial_conditioning_needs_a_fitting_grid():
    with pytest.raises(ValueError, match="condition_shape"):
        PixelCNN(K, (6, 6), num_layers=None, condition_shape=(4, 4), condition_embeddings=K)
    prior = tiny_prior()
    with pytest.raises(ValueError, match="pass condition"):
        prior.bottom(tf.zeros([1, 4, 4], tf.int32))


# ------------------------------------------------------------------ stages and exports


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """vqvae2_tiny trained 3 steps on fake IDX images at 32x32, its codes, a conditional prior
    with one attention block trained 2 steps, SavedModels and TFLite files."""
    from vqvae_tf import PriorConfig
    from vqvae_tf.data import DataSource
    from vqvae_tf.serving import export_savedmodel_lib
    from vqvae_tf.training import export_codes_lib, train_prior_lib, train_vqvae_lib
    from vqvae_tf.training.options import RunOptions

    root = tmp_path_factory.mktemp("vqvae2")
    data_dir = str(root / "idx")
    fake_mnist_dir(data_dir, n_train=32, n_test=10)
    workdir = str(root / "work")
    options = RunOptions(workdir=workdir, data=DataSource(data_dir=data_dir, image_size=(32, 32)), log_every=3)
    config = dataclasses.replace(get_config("vqvae2_tiny"), steps=3, batch_size=8).validate()
    metrics = train_vqvae_lib.train_and_evaluate(config, options)
    meta = export_codes_lib.export_codes_stage(workdir)
    prior_config = PriorConfig(
        num_filters=8, num_layers=None, kernel_size=5, steps=2, batch_size=8, conditional=True, attention_blocks=1
    )
    prior_metrics = train_prior_lib.train_prior(
        prior_config, RunOptions(workdir=workdir, log_every=2, num_sample_columns=2)
    )
    export_dir = str(root / "serving")
    paths = export_savedmodel_lib.export_savedmodel_stage(workdir, export_dir)
    return dict(
        workdir=workdir,
        export_dir=export_dir,
        paths=paths,
        metrics=metrics,
        prior_metrics=prior_metrics,
        meta=meta,
        model=train_vqvae_lib.load_trained_model(workdir),
        prior=train_prior_lib.load_trained_prior(workdir),
        vq_sm=tf.saved_model.load(paths["vqvae"]),
        prior_sm=tf.saved_model.load(paths["prior"]),
    )


def test_stages_write_both_levels(trained):
    m, meta = trained["metrics"], trained["meta"]
    for key in ("perplexity_top", "perplexity_bottom", "codebook_usage_top", "codebook_usage_bottom"):
        assert key in m and "perplexity" not in m
    assert m["code_bits_per_image"] == (16 + 64) * 4
    assert meta["grids"] == {"codes_top": [4, 4], "codes_bottom": [8, 8]} and meta["model"] == "vqvae2"
    from vqvae_tf import read_codes

    (grids, _), *_ = list(read_codes(os.path.join(trained["workdir"], "codes"), "test").take(1))
    assert grids["codes_top"].shape == (4, 4) and grids["codes_bottom"].shape == (8, 8)
    p = trained["prior_metrics"]
    assert {"test_bits_per_code", "test_bits_per_code_top", "test_bits_per_code_bottom"} <= set(p)
    assert np.isclose(
        p["test_bits_per_code"],
        (16 * p["test_bits_per_code_top"] + 64 * p["test_bits_per_code_bottom"]) / 80,
        rtol=1e-4,
    )
    assert isinstance(trained["prior"], HierarchicalPrior) and trained["prior"].top.has_attention
    assert os.path.isfile(os.path.join(trained["workdir"], "prior", "samples.png"))


def test_savedmodel_signatures_equal_keras(trained):
    model, prior, vq, pm = (
        trained["model"],
        trained["prior"],
        trained["vq_sm"].signatures,
        trained["prior_sm"].signatures,
    )
    x = tf.random.uniform([3, 32, 32, 1], seed=8)
    codes = model.encode_grids(x)
    got = vq["encode"](images=x)
    for name in ("codes_top", "codes_bottom"):
        np.testing.assert_array_equal(got[name].numpy(), codes[name].numpy())
    np.testing.assert_allclose(vq["decode"](**codes)["images"].numpy(), model.decode_grids(codes).numpy(), atol=1e-5)
    out = pm["serving_default"](
        num_samples=tf.constant(3), temperature=tf.constant(1.0), seed=tf.constant(4), labels=tf.constant([0, 1, 2])
    )
    want = sample_grids(prior, 3, seed=4, labels=[0, 1, 2])
    for name in ("codes_top", "codes_bottom"):
        np.testing.assert_array_equal(out[name].numpy(), want[name].numpy())
    np.testing.assert_allclose(out["images"].numpy(), model.decode_grids(want).numpy(), atol=1e-5)
    lp = pm["log_prob"](**codes, labels=tf.constant([1, 1, 1]))
    np.testing.assert_allclose(
        lp["log_prob"].numpy(),
        prior.log_prob(codes["codes_top"], codes["codes_bottom"], tf.constant([1, 1, 1])).numpy(),
        rtol=1e-5,
    )
    # Bad code grids: a clear InvalidArgument naming the problem.
    good_top, good_bottom = codes["codes_top"], codes["codes_bottom"]
    for kwargs, message in (
        (dict(codes_top=good_top[:2], codes_bottom=good_bottom), "same batch size"),
        (dict(codes_top=tf.fill([3, 4, 4], 99), codes_bottom=good_bottom), "codes must be in"),
        (dict(codes_top=good_top, codes_bottom=tf.zeros([3, 8, 4], tf.int32)), "codes_bottom must have shape"),
    ):
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            vq["decode"](**kwargs)
    with pytest.raises(tf.errors.InvalidArgumentError, match="same batch size"):
        pm["log_prob"](codes_top=good_top[:1], codes_bottom=good_bottom, labels=tf.constant([1, 1, 1]))


def test_warmup_records_replay(trained):
    from vqvae_tf.serving import savedmodel

    for name, sm in (("vqvae", trained["vq_sm"]), ("prior", trained["prior_sm"])):
        requests = list(warmup_requests(trained["paths"][name]))
        assert {signature_name for signature_name, _, _ in requests} == set(sm.signatures)
        for signature_name, inputs, _ in requests:
            out = sm.signatures[signature_name](**inputs)
            assert set(out) == set(sm.signatures[signature_name].structured_outputs)
    config = open(os.path.join(trained["export_dir"], savedmodel.MODELS_CONFIG_FILE)).read()
    assert 'name: "vqvae"' in config and 'name: "prior"' in config


def test_tflite_decoder_takes_both_grids(trained, tmp_path):
    model = trained["model"]
    images = tf.random.uniform([12, 32, 32, 1], seed=9).numpy()
    report = tflite.export_tflite(model, str(tmp_path), images, quantizations=("float32",))
    r = report["models"]["float32"]
    assert r["meets_bar"] and r["encoder_code_agreement"] == 1.0
    data = open(tmp_path / "tflite" / "decoder_float32.tflite", "rb").read()
    assert not [op for op in tflite.op_names(data) if op.startswith("Flex") or op == "CUSTOM"]
    codes = {k: v.numpy() for k, v in model.encode_grids(images[:2]).items()}
    got = tflite.run_signature(data, "decode", **codes)["images"]
    np.testing.assert_allclose(got, model.decode_grids(codes).numpy(), atol=1e-4)


# ------------------------------------------------------------------ the pipeline, on real images


@pytest.mark.slow
def test_vqvae2_pipeline_on_a_folder_of_real_images(scripts, tmp_path):
    """VQ-VAE-2 through every stage on a user's folder: 600 real Fashion-MNIST images written as
    colour JPEGs in class folders (no split folders), one corrupt file and one text file, resized to
    32x32 (4x4 top, 8x8 bottom codes). The one pipeline test on an image folder; a re-run skipping
    every stage is test_pipeline's (the stages' done tests do not depend on the model)."""
    x, y = fashion_mnist_arrays("train", 600)
    root = tmp_path / "photos"
    image_folder(root, x, y, fmt="jpg", rgb=True, quality=95)
    (root / "c0" / "broken.jpg").write_bytes(b"\xff\xd8\xff" + bytes(100))
    (root / "LICENSE.txt").write_text("CC-BY")
    w = tmp_path / "run"
    args = [
        f"--workdir={w}", "--recipe=quick", "--model=vqvae2",
        "--config=vqvae2_tiny", "--dataset=image_folder", f"--data_dir={root}", "--image_size=32",
        "--skip_corrupt_images", "--vqvae_steps=30", "--prior_steps=10", "--quantization=float32",
    ]  # fmt: skip
    env = {"VQVAE_CACHE_DIR": str(tmp_path / "cache")}
    res = scripts.run("train.pipeline", *args, env=env, timeout=900)  # (a fork of the warm script server)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Skipping 1 corrupt image(s)" in res.stdout and "c0/broken.jpg" in res.stdout
    assert "Ignored 1 file(s)" in res.stdout and "LICENSE.txt" in res.stdout
    meta = json.load(open(w / "codes" / "meta.json"))
    assert meta["class_names"] == [f"c{i}" for i in range(10)]
    assert meta["image_shape"] == [32, 32, 3] and sum(meta["counts"].values()) == 600
    assert meta["data"]["name"] == "image_folder" and meta["data"]["data_dir"] == str(root)
    assert f"dataset `image_folder` (`{root}`), images 32x32x3" in (w / "REPORT.md").read_text()
    vq = json.load(open(w / "vqvae" / "metrics.json"))
    prior = json.load(open(w / "prior" / "metrics.json"))
    assert vq["steps"] == 30 and prior["steps"] == 10 and prior["conditional"] is True
    assert 0.0 < vq["test_normalized_mse"] < 1.0  # it learnt something in 30 steps
    report = (w / "REPORT.md").read_text()
    assert report.startswith("# VQ-VAE-2") and f"| perplexity_bottom | {vq['perplexity_bottom']:.4g} |" in report
    assert f"| test_bits_per_code_top | {prior['test_bits_per_code_top']:.4g} |" in report
    sm = tf.saved_model.load(str(w / "export" / "vqvae" / "1")).signatures["decode"]
    assert sorted(sm.structured_input_signature[1]) == ["codes_bottom", "codes_top"]
    assert (w / "export" / "tflite" / "decoder_float32.tflite").is_file()
    assert json.load(open(w / "presets" / "prior" / "config.json"))["class_name"] == "HierarchicalPrior"
    # The sample script on the preset the pipeline wrote (no workdir needed).
    out = tmp_path / "samples.png"
    res = scripts.run(
        "train.sample", f"--preset={w / 'presets'}", "--labels=c3", "--num_samples=2", f"--output={out}", env=env
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert out.is_file()


def test_transformer_top_level(trained, tmp_path):
    """--prior=transformer on VQ-VAE-2 codes: a causal transformer models the top grid (exact
    log p(top), its KV-cached sampler), the bottom stays the conditioned PixelCNN; through the
    stage and the SavedModel. MaskGIT is refused with the reason."""
    import shutil

    from vqvae_tf import PriorConfig, TransformerPrior
    from vqvae_tf.models.priors import transformer
    from vqvae_tf.serving import savedmodel
    from vqvae_tf.training import train_prior_lib
    from vqvae_tf.training.options import RunOptions

    prior = HierarchicalPrior(K, (2, 3), (4, 6), num_filters=8, num_layers=None, num_classes=3, top_prior="transformer")
    for v in prior.weights:
        v.assign(tf.random.normal(v.shape, stddev=0.3, seed=7))
    assert (
        isinstance(prior.top, TransformerPrior) and prior.top.num_layers == 4 and prior.prior_network == "transformer"
    )
    top = tf.random.uniform([3, 2, 3], 0, K, tf.int32, seed=1)
    bottom = tf.random.uniform([3, 4, 6], 0, K, tf.int32, seed=2)
    labels = tf.constant([0, 1, 2])
    lp_top, lp_bottom = prior.log_prob_levels(top, bottom, labels)
    np.testing.assert_allclose(lp_top.numpy(), prior.top.log_prob(top, labels).numpy(), rtol=1e-6)
    np.testing.assert_allclose(
        lp_bottom.numpy(), prior.bottom.log_prob(bottom, labels, condition=top).numpy(), rtol=1e-6
    )
    grids = sample_grids(prior, 3, seed=5, labels=[0, 1, 2])
    want_top = transformer.sample_codes_graph(prior.top, 3, 1.0, 5, labels)
    np.testing.assert_array_equal(grids["codes_top"].numpy(), want_top.numpy())
    want_bottom = sample_codes(prior.bottom, 3, seed=6, labels=[0, 1, 2], condition=want_top)
    np.testing.assert_array_equal(grids["codes_bottom"].numpy(), want_bottom.numpy())
    with pytest.raises(ValueError, match="attention_blocks is the PixelCNN top prior's"):
        HierarchicalPrior(K, (2, 3), (4, 6), attention_blocks=1, top_prior="transformer")

    w = str(tmp_path / "w")
    for stage in ("vqvae", "codes"):
        shutil.copytree(os.path.join(trained["workdir"], stage), os.path.join(w, stage))
    options = RunOptions(workdir=w, log_every=2, num_sample_columns=2)
    config = PriorConfig(prior="transformer", num_filters=8, num_layers=2, steps=2, batch_size=8, conditional=True)
    metrics = train_prior_lib.train_prior(config, options)
    assert metrics["prior"] == "transformer" and {"test_bits_per_code_top", "bits_per_dim"} <= set(metrics)
    loaded = train_prior_lib.load_trained_prior(w)
    # 2 gated blocks cannot reach the 8x8 bottom grid: the stack is sized from it; the top has 4.
    assert isinstance(loaded.top, TransformerPrior) and loaded.top.num_layers == 4 and loaded.bottom.num_layers > 2
    # Served: the SavedModel's samples are the library's (sample_xla: the same graph, tested on
    # every one-grid prior in test_prior_exports; its XLA compile here would cost CI a minute).
    path = savedmodel.export_prior(loaded, trained["model"], str(tmp_path / "e"))
    inputs = dict(num_samples=2, temperature=1.0, seed=3, labels=[1, 0])
    out = tf.saved_model.load(path).signatures["serving_default"](**{k: tf.constant(v) for k, v in inputs.items()})
    want = sample_grids(loaded, 2, seed=3, labels=[1, 0])
    for name in ("codes_top", "codes_bottom"):
        np.testing.assert_array_equal(out[name].numpy(), want[name].numpy())
    with pytest.raises(ValueError, match="MaskGIT has no exact likelihood"):
        train_prior_lib.train_prior(PriorConfig(prior="maskgit", steps=2, batch_size=8), RunOptions(workdir=w))
