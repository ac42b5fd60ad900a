import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import logit_spread, peaked, train_prior_on

from vqvae_tf import MaskedConv2D, PixelCNN, sample_codes
from vqvae_tf.configs import CONFIG_NAMES
from vqvae_tf.layers.masked_conv import causal_mask, shift_down
from vqvae_tf.models.priors.pixelcnn_sampling import sample_codes_from_uniforms_graph

K = 10


def small_prior(num_classes=0, layers=4, kernel=3, shape=(5, 5), filters=8):
    keras.utils.set_random_seed(0)
    return PixelCNN(K, shape, num_filters=filters, num_layers=layers, kernel_size=kernel, num_classes=num_classes)


def test_masks():
    np.testing.assert_array_equal(causal_mask((3, 3), "A"), [[1, 1, 1], [1, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(causal_mask((3, 3), "B"), [[1, 1, 1], [1, 1, 0], [0, 0, 0]])
    np.testing.assert_array_equal(causal_mask((3, 3), "V"), [[1, 1, 1], [1, 1, 1], [0, 0, 0]])
    np.testing.assert_array_equal(causal_mask((1, 5), "A"), [[1, 1, 0, 0, 0]])


@pytest.mark.parametrize("mask_type", ["A", "B", "V"])
def test_masked_conv_equals_conv_with_masked_kernel(mask_type):
    conv = MaskedConv2D(4, 3, mask_type=mask_type)
    x = tf.random.normal([2, 6, 6, 3])
    y = conv(x)
    kernel_before = conv.kernel.numpy().copy()
    masked = conv.kernel.numpy() * causal_mask((3, 3), mask_type)[:, :, None, None]
    want = tf.nn.conv2d(x, masked, 1, "SAME") + conv.bias
    np.testing.assert_allclose(y.numpy(), want.numpy(), atol=1e-5)
    np.testing.assert_array_equal(conv.kernel.numpy(), kernel_before)  # the variable is never masked in place
    assert np.abs(kernel_before * (1 - causal_mask((3, 3), mask_type))[:, :, None, None]).sum() > 0
    clone = MaskedConv2D.from_config(conv.get_config())
    assert clone.mask_type == mask_type and clone.get_config() == conv.get_config()


def test_masked_conv_bad_args():
    with pytest.raises(ValueError, match="mask_type"):
        MaskedConv2D(4, 3, mask_type="C")
    with pytest.raises(ValueError, match="odd kernel"):
        MaskedConv2D(4, 2)


def _dependency(prior, labels=None):
    """dep[p, q] = |d logits[p] / d input[q]| summed, for positions p, q in raster order."""
    h, w = prior.latent_shape
    x = tf.random.normal([1, h, w, prior.num_filters])
    dep = np.zeros((h * w, h * w))
    for p in range(h * w):
        with tf.GradientTape() as tape:
            tape.watch(x)
            logits = prior.logits_from_embeddings(x, labels)
            out = tf.reduce_sum(tf.reshape(logits, [h * w, -1])[p])
        dep[p] = np.abs(tape.gradient(out, x).numpy()).sum(-1).reshape(-1)
    return dep


@pytest.mark.parametrize("num_classes", [0, 3])
def test_causality_and_no_blind_spot(num_classes):
    prior = small_prior(num_classes)
    labels = tf.constant([1]) if num_classes else None
    dep = _dependency(prior, labels)
    n = dep.shape[0]
    for p in range(n):
        assert np.all(dep[p, p:] == 0.0), f"position {p} sees itself or later positions"
        assert np.all(dep[p, :p] > 0.0), f"position {p} has a blind spot at {np.where(dep[p, :p] == 0)[0]}"


def _stack_dependency(prior, blocks, labels=None):
    """seen[p, q]: whether the last horizontal stack's output at position p (before the head,
    whose ReLU could hide a dependency) has a non-zero gradient w.r.t. the input at q."""
    h, w = prior.latent_shape
    n = h * w
    # One copy of the input per output position p: batch element p answers for position p.
    x = tf.tile(tf.random.normal([1, h, w, prior.num_filters], seed=1), [n, 1, 1, 1])
    labels = None if labels is None else tf.repeat(labels, n)
    weights = tf.random.normal([n, prior.num_filters], seed=2)
    with tf.GradientTape() as tape:
        tape.watch(x)
        out, v = x, x
        for block in blocks:
            cond_v, cond_h = block.conditioning(labels)
            v_pre, v = block.vertical(v, cond_v)
            out = block.horizontal(out, shift_down(v_pre), cond_h)
        at_p = tf.gather(tf.reshape(out, [n, n, -1]), tf.range(n), axis=1, batch_dims=1)
        total = tf.reduce_sum(at_p * weights)
    return np.abs(tape.gradient(total, x).numpy()).sum(-1).reshape(n, n) > 0


@pytest.mark.parametrize(
    "shape,kernel", [((7, 7), 3), ((5, 9), 3), ((9, 5), 3), ((7, 7), 5), ((6, 11), 5), ((11, 4), 5), ((2, 2), 3)]
)
@pytest.mark.parametrize("num_classes", [0, 3])
def test_reach_of_the_smallest_allowed_stack(shape, kernel, num_classes):
    """With `layers_to_reach` blocks every position sees every earlier one, and never a later
    one; with one block fewer some earlier position is unseen (so the bound is tight) and the
    constructor refuses it."""
    layers = PixelCNN.layers_to_reach(shape, kernel)
    prior = small_prior(num_classes, layers=None, kernel=kernel, shape=shape)
    assert prior.num_layers == layers
    labels = tf.constant([1]) if num_classes else None
    seen = _stack_dependency(prior, prior.blocks, labels)
    earlier = np.tril(np.ones_like(seen), k=-1)
    np.testing.assert_array_equal(seen, earlier)
    if layers > 1:
        assert not np.all(_stack_dependency(prior, prior.blocks[:-1], labels)[earlier])
        h, w = shape
        with pytest.raises(
            ValueError, match=rf"num_layers={layers - 1} with kernel_size={kernel} .* {h}x{w} code grid"
        ):
            small_prior(num_classes, layers=layers - 1, kernel=kernel, shape=shape)


def test_every_prior_preset_reaches_its_grids():
    from vqvae_tf.configs import CONFIG_NAMES, get_config, get_prior_config

    vqvae2 = tuple(n for n in CONFIG_NAMES if n.startswith("vqvae2"))
    pairs = {
        "default": ("fashion_mnist", "cifar10", "tiny"),
        "quick": CONFIG_NAMES,
        "imagenet128": ("imagenet128",),
        "vqvae2": vqvae2,
    }
    for prior_name, vq_names in pairs.items():
        prior = get_prior_config(prior_name)
        for vq_name in vq_names:
            for grid in get_config(vq_name).prior_grids().values():
                needed = PixelCNN.layers_to_reach(grid, prior.kernel_size)
                assert prior.num_layers is None or prior.num_layers >= needed, (prior_name, vq_name)
    with pytest.raises(ValueError, match="32x32 code grid"):
        PixelCNN(512, get_config("imagenet128").latent_shape)  # the default stack is 8 blocks of 3x3


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_every_config_trains_the_recipes_prior_on_its_grids(name):
    """Every config in README's table: each pipeline recipe's prior and train_prior's default
    config, fitted to the config's code grids as the pipeline and train_prior fit them, build for
    those grids (the stack sees every earlier position) and score codes of them."""
    from vqvae_tf.configs import RECIPE_NAMES, get_config, get_prior_config, get_recipe
    from vqvae_tf.training import train_prior_lib

    config = get_config(name)
    grids = config.prior_grids()
    meta = {
        "format_version": 2,
        "prior_family": config.model_cls.prior_family,
        "num_embeddings": config.num_embeddings,
        "num_classes": 3,
        "depth": 1,
        **({"grids": grids} if len(grids) > 1 else {"latent_shape": list(grids["codes"])}),
    }
    pixelcnn_recipes = [r for r in RECIPE_NAMES if get_recipe(r).prior.prior == "pixelcnn"]  # (not clipart's MaskGIT)
    candidates = [get_recipe(r, config=name).prior for r in pixelcnn_recipes] + [get_prior_config("default")]
    built = set()
    for prior_config in candidates:
        train_prior_lib.fit_to_grids(prior_config, grids, config.model_cls.prior_family)
        prior_config.num_filters = 4  # the depth and kernel are what reach; the width is not
        prior_config.conditional = True
        key = (prior_config.num_layers, prior_config.kernel_size, prior_config.attention_blocks)
        if key in built:
            continue  # the same network as a candidate before
        built.add(key)
        prior = train_prior_lib.build_prior(prior_config, meta)
        stacks = [prior] if isinstance(prior, PixelCNN) else [prior.top, prior.bottom]
        assert [s.latent_shape for s in stacks] == [tuple(g) for g in grids.values()]
        for stack in stacks:
            assert stack.num_layers >= PixelCNN.layers_to_reach(stack.latent_shape, stack.kernel_size), name
        codes = {k: tf.zeros([1, *g], tf.int32) for k, g in grids.items()}
        log_prob = prior.log_prob_grids(codes, tf.constant([1]) if prior.num_classes else None)
        assert log_prob.shape == (1,) and np.isfinite(log_prob.numpy()).all(), name


def test_class_conditioning_changes_logits():
    prior = small_prior(num_classes=3)
    codes = tf.zeros([2, 5, 5], tf.int32)
    a = prior(codes, tf.constant([0, 0]))
    b = prior(codes, tf.constant([0, 2]))
    np.testing.assert_allclose(a[0].numpy(), b[0].numpy())
    assert np.abs(a[1].numpy() - b[1].numpy()).max() > 1e-4


def test_log_prob_matches_numpy():
    prior = small_prior()
    codes = tf.random.stateless_uniform([3, 5, 5], seed=[1, 1], maxval=K, dtype=tf.int32)
    logits = prior(codes).numpy().astype(np.float64)
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    want = np.take_along_axis(log_softmax, codes.numpy()[..., None], -1).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(prior.log_prob(codes).numpy(), want, rtol=1e-5)


def test_bad_codes_and_labels():
    prior = small_prior()
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"codes must be in \[0, 10\)"):
        prior(tf.fill([1, 5, 5], K))
    with pytest.raises(ValueError, match=r"codes must have shape \[B, 5, 5\]"):
        prior(tf.zeros([1, 4, 5], tf.int32))
    with pytest.raises(TypeError, match="integers"):
        prior(tf.zeros([1, 5, 5]))
    with pytest.raises(ValueError, match="unconditional"):
        prior(tf.zeros([1, 5, 5], tf.int32), tf.constant([0]))
    cond = small_prior(num_classes=3)
    with pytest.raises(ValueError, match="pass labels"):
        cond(tf.zeros([1, 5, 5], tf.int32))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"labels must be in \[0, 3\)"):
        cond(tf.zeros([1, 5, 5], tf.int32), tf.constant([3]))


def test_keras_round_trip(tmp_path):
    prior = small_prior(num_classes=3)
    prior.compile(optimizer="adam")
    codes = tf.random.stateless_uniform([8, 5, 5], seed=[2, 2], maxval=K, dtype=tf.int32)
    labels = tf.range(8) % 3
    prior.fit((codes, labels), epochs=1, batch_size=4, verbose=0)
    path = str(tmp_path / "prior.keras")
    prior.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.get_config() == prior.get_config()
    np.testing.assert_allclose(loaded(codes, labels).numpy(), prior(codes, labels).numpy(), atol=1e-5)
    # Keras' multi-input form (predict / evaluate on (codes, labels)) gives the same logits.
    np.testing.assert_allclose(prior.predict((codes, labels), verbose=0), prior(codes, labels).numpy(), atol=1e-5)


def test_train_step_lowers_nll():
    prior = small_prior()
    prior.compile(optimizer=keras.optimizers.Adam(1e-2))
    # Stripes: each row repeats one code, so the prefix predicts the rest.
    codes = tf.tile(tf.range(5)[None, :, None], [16, 1, 5]) % K
    first, logs, after = train_prior_on(prior, codes, 40)
    assert set(logs) == {"loss", "bits_per_code"}
    assert after < 0.5 * first


# ---------------------------------------------------------------- sampling


@pytest.mark.parametrize("num_classes,kernel", [(0, 3), (4, 3), (0, 5), (4, 5)])
def test_fast_sampler_equals_plain(num_classes, kernel):
    # kernel 5: two past columns per block in the shift register, 3 x 5 vertical patches. Peaked
    # logits (random weights of std 0.3), so that a sampler fed the wrong context picks other codes.
    prior = peaked(small_prior(num_classes, layers=5 if kernel == 3 else 3, kernel=kernel, shape=(4, 6)))
    labels = np.arange(6) % 4 if num_classes else None
    assert logit_spread(prior, tf.zeros([6, 4, 6], tf.int32), labels) > 0.5  # untrained: about 0.005
    for seed in (0, 1, 7):
        plain = sample_codes(prior, 6, seed=seed, labels=labels, fast=False)
        fast = sample_codes(prior, 6, seed=seed, labels=labels, fast=True)
        np.testing.assert_array_equal(plain.numpy(), fast.numpy())


def test_sampling_determinism_shape_dtype():
    prior = small_prior()
    a = sample_codes(prior, 5, seed=3)
    b = sample_codes(prior, 5, seed=3)
    c = sample_codes(prior, 5, seed=4)
    assert a.shape == (5, 5, 5) and a.dtype == tf.int32
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.array_equal(a.numpy(), c.numpy())
    assert a.numpy().min() >= 0 and a.numpy().max() < K


def test_low_temperature_approaches_argmax():
    prior = small_prior()
    # An untrained prior has exactly tied logits at the first position (zero biases, no context).
    prior.head_logits.bias.assign(tf.random.stateless_normal([K], seed=[0, 1]))
    codes = sample_codes(prior, 4, temperature=1e-4, seed=0)
    # Each code is the argmax of the logits given the codes before it.
    np.testing.assert_array_equal(codes.numpy(), tf.argmax(prior(codes), -1).numpy())


def test_top_k_restricts_choices():
    prior = small_prior()
    codes = sample_codes(prior, 8, seed=5, top_k=2, temperature=5.0)
    logits = prior(codes).numpy()
    rank = (logits > np.take_along_axis(logits, codes.numpy()[..., None], -1)).sum(-1)
    assert rank.max() <= 1  # the sampled code is among the 2 largest logits


def test_sampling_bad_arguments():
    prior = small_prior()
    with pytest.raises(ValueError, match="temperature must be > 0"):
        sample_codes(prior, 2, temperature=0.0)
    with pytest.raises(ValueError, match="num_samples must be a positive integer"):
        sample_codes(prior, 0)
    with pytest.raises(ValueError, match=r"top_k must be in \[1, num_embeddings\]"):
        sample_codes(prior, 2, top_k=K + 1)
    with pytest.raises(ValueError, match="pass labels"):
        sample_codes(small_prior(num_classes=2), 2)
    with pytest.raises(tf.errors.InvalidArgumentError, match="labels must be one per sample"):
        sample_codes(small_prior(num_classes=2), 3, labels=[0, 1])


@pytest.mark.parametrize("fast", [False, True])
def test_sampler_under_jit_compile(fast):
    prior = small_prior(num_classes=2)
    codes = sample_codes(prior, 3, seed=1, labels=[0, 1, 1], fast=fast, jit_compile=True)
    again = sample_codes(prior, 3, seed=1, labels=[0, 1, 1], fast=fast, jit_compile=True)
    assert codes.shape == (3, 5, 5)
    np.testing.assert_array_equal(codes.numpy(), again.numpy())


def test_mirrored_prior_step(mirrored):
    codes = tf.random.stateless_uniform([8, 5, 5], seed=[3, 3], maxval=K, dtype=tf.int32)
    single = small_prior()
    single.compile(optimizer=keras.optimizers.SGD(0.1))
    init = [v.numpy() for v in single.trainable_variables]
    tf.function(single.train_step)(codes)
    with mirrored.scope():
        multi = small_prior()
        multi.compile(optimizer=keras.optimizers.SGD(0.1))
    for v, value in zip(multi.trainable_variables, init):
        v.assign(value)
    it = iter(mirrored.experimental_distribute_dataset(tf.data.Dataset.from_tensors(codes)))
    tf.function(lambda b: mirrored.run(multi.train_step, args=(b,)))(next(it))
    for a, b in zip(single.trainable_variables, multi.trainable_variables):
        for local in mirrored.experimental_local_results(b.value):
            np.testing.assert_allclose(local.numpy(), a.numpy(), rtol=1e-4, atol=1e-6)


def test_cached_sampler_under_mixed_precision():
    # The pipeline passes --mixed_precision to the prior too: its cached sampler must run in the
    # compute dtype and still give the plain sampler's codes.
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        # Untrained: with peaked logits bfloat16's rounding in another order flips near-ties.
        prior = PixelCNN(16, (5, 5), 8, 4, num_classes=3)
        labels = np.array([0, 1, 2, 0], np.int32)
        fast = sample_codes(prior, 4, seed=1, labels=labels, fast=True).numpy()
        plain = sample_codes(prior, 4, seed=1, labels=labels, fast=False).numpy()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert prior.blocks[0].v_conv.compute_dtype == "bfloat16"
    np.testing.assert_array_equal(fast, plain)


@pytest.mark.parametrize("num_classes", [0, 4])
def test_uniform_driven_sampler_fast_equals_plain(num_classes):
    """The on-device generator's sampler (caller-supplied uniforms, inverse CDF): the cached form
    gives the codes of the whole-network-per-position form, and a uniform picks by the CDF."""
    prior = peaked(small_prior(num_classes, layers=5, shape=(4, 6)))
    uniforms = tf.constant(np.random.default_rng(3).uniform(size=(5, 24)).astype(np.float32))
    labels = tf.constant(np.arange(5) % 4, tf.int32) if num_classes else None
    fast = sample_codes_from_uniforms_graph(prior, uniforms, tf.constant(1.0), labels)
    plain = sample_codes_from_uniforms_graph(prior, uniforms, tf.constant(1.0), labels, fast=False)
    np.testing.assert_array_equal(fast.numpy(), plain.numpy())
    # Position 0 has nothing before it: its code is the inverse CDF of its logits at its uniform.
    logits = prior(tf.zeros([5, 4, 6], tf.int32), labels).numpy()[:, 0, 0].astype(np.float64)
    cdf = np.cumsum(np.exp(logits) / np.exp(logits).sum(-1, keepdims=True), -1)
    np.testing.assert_array_equal(fast.numpy()[:, 0, 0], (cdf < uniforms.numpy()[:, :1]).sum(-1))
