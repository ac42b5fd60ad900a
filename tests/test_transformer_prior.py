"""The autoregressive transformer prior: causality, its exact likelihood, the key/value-cached
sampler against the plain one, inputs, serialization and its prior family."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import logit_spread, numpy_uniform, peaked, train_prior_on

from vqvae_tf.models import priors
from vqvae_tf.models.priors.transformer import TransformerPrior, sample_codes_graph

K = 10


def small_prior(num_classes=0, shape=(3, 4), depth=1, positions="axial", layers=2):
    keras.utils.set_random_seed(0)
    return TransformerPrior(
        K, shape, width=16, num_layers=layers, num_heads=4, num_classes=num_classes, depth=depth, positions=positions
    )


def random_codes(shape, seed):
    return tf.random.stateless_uniform(shape, seed=[seed, 0], maxval=K, dtype=tf.int32)


@pytest.mark.parametrize("positions", ["axial", "learned"])
def test_logits_depend_on_every_earlier_position_and_no_later_one(positions):
    prior = peaked(small_prior(num_classes=2, positions=positions))
    codes = random_codes([1, 3, 4], 1).numpy()
    labels = tf.constant([1])
    base = prior(codes, labels).numpy().reshape(12, K)
    for j in range(12):
        changed = codes.copy().reshape(12)
        changed[j] = (changed[j] + 1) % K
        logits = prior(changed.reshape(1, 3, 4), labels).numpy().reshape(12, K)
        moved = np.abs(logits - base).max(axis=-1) > 1e-5
        assert not moved[: j + 1].any(), f"position {j} changed the logits at or before it"
        assert moved[j + 1 :].all(), f"position {j} did not reach every later position"
    # The class (the start token) reaches every position.
    other = prior(codes, tf.constant([0])).numpy().reshape(12, K)
    assert (np.abs(other - base).max(axis=-1) > 1e-5).all()


def test_log_prob_is_the_chain_rule_of_its_conditionals():
    """log p(x) = sum_t log p(x_t | x_<t), each conditional read off a grid whose positions >= t
    are other codes: the likelihood is exact, and bits_per_code is it in bits per code."""
    prior = peaked(small_prior(num_classes=3))
    codes = random_codes([2, 3, 4], 2).numpy()
    labels = tf.constant([0, 2])
    want = np.zeros(2)
    for t in range(12):
        scrambled = codes.reshape(2, 12).copy()
        scrambled[:, t:] = (scrambled[:, t:] + 3) % K
        logits = prior(scrambled.reshape(2, 3, 4), labels).numpy().reshape(2, 12, K).astype(np.float64)[:, t]
        log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        want += log_softmax[np.arange(2), codes.reshape(2, 12)[:, t]]
    log_prob = prior.log_prob(codes, labels).numpy()
    np.testing.assert_allclose(log_prob, want, rtol=1e-5)
    np.testing.assert_allclose(prior.bits_per_code(log_prob), -want / (12 * np.log(2)), rtol=1e-5)


def ancestral_reference(prior, labels, seed, n):
    """Ancestral sampling in NumPy: position t's code is the inverse CDF of the softmax of its
    logits given the codes before it, at element i of the uniform stream t of `seed`."""
    h, w = prior.latent_shape
    codes = np.zeros([n, h * w], np.int32)
    for t in range(h * w):
        logits = prior(codes.reshape(n, h, w), labels).numpy().reshape(n, h * w, -1)[:, t].astype(np.float64)
        cdf = np.cumsum(np.exp(logits - logits.max(-1, keepdims=True)), axis=-1)
        codes[:, t] = (cdf <= numpy_uniform(seed, t, n)[:, None] * cdf[:, -1:]).sum(-1)
    return codes.reshape(n, h, w)


@pytest.mark.parametrize("num_classes,depth", [(0, 1), (4, 1), (4, 2)])
def test_cached_sampler_equals_the_plain_one(num_classes, depth):
    """The same seed gives the same codes with and without the key/value cache, and a NumPy
    ancestral sampler's from the same uniforms, on a prior with
    peaked logits (an untrained one's are nearly uniform: a wrong context would pick the same)."""
    prior = peaked(small_prior(num_classes, shape=(3, 4), depth=depth), std=0.5)
    labels = tf.constant(np.arange(5) % 4, tf.int32) if num_classes else None
    assert logit_spread(prior, tf.zeros([5, 3, 4], tf.int32), labels) > 1.0
    sample = tf.function(sample_codes_graph, autograph=False)
    for seed in (0, 3):
        cached = sample(prior, 5, 1.0, seed, labels, cache=True).numpy()
        plain = sample(prior, 5, 1.0, seed, labels, cache=False).numpy()
        np.testing.assert_array_equal(cached, plain)
        assert cached.shape == (5, 3, 4) and cached.dtype == np.int32
        np.testing.assert_array_equal(cached, ancestral_reference(prior, labels, seed, 5))
    other = sample(prior, 5, 1.0, 1, labels).numpy()
    assert (other != cached).any()  # another seed, other codes


def test_low_temperature_and_top_1_give_the_greedy_codes():
    prior = peaked(small_prior(num_classes=2), std=0.5)
    labels = tf.constant([0, 1])
    greedy = np.zeros([2, 12], np.int32)
    for t in range(12):  # argmax of each conditional given the greedy prefix
        logits = prior(greedy.reshape(2, 3, 4), labels).numpy().reshape(2, 12, K)
        greedy[:, t] = logits[:, t].argmax(-1)
    top1 = sample_codes_graph(prior, 2, 1.0, 4, labels, top_k=1).numpy().reshape(2, 12)
    np.testing.assert_array_equal(top1, greedy)
    cold = sample_codes_graph(prior, 2, 1e-4, 4, labels).numpy().reshape(2, 12)
    np.testing.assert_array_equal(cold, greedy)


def test_train_step_lowers_the_nll():
    prior = small_prior(layers=1)
    prior.compile(optimizer=keras.optimizers.Adam(1e-2))
    codes = tf.tile(tf.range(3)[None, :, None], [16, 1, 4]) % K  # each row repeats one code
    first, logs, after = train_prior_on(prior, codes, 30)
    assert set(logs) == {"loss", "bits_per_code"}
    assert after < 0.5 * first


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="width=18 must be divisible by num_heads=4"):
        TransformerPrior(K, (3, 4), width=18)
    with pytest.raises(ValueError, match="positions must be one of"):
        TransformerPrior(K, (3, 4), width=16, positions="rotary")
    with pytest.raises(ValueError, match="multiple of depth=3"):
        TransformerPrior(K, (3, 4), width=16, depth=3)
    prior = small_prior(num_classes=3)
    with pytest.raises(ValueError, match="pass labels"):
        prior(tf.zeros([1, 3, 4], tf.int32))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"codes must be in \[0, 10\)"):
        prior(tf.fill([1, 3, 4], K), tf.constant([0]))
    with pytest.raises(ValueError, match=r"codes must have shape \[B, 3, 4\]"):
        prior(tf.zeros([1, 4, 3], tf.int32), tf.constant([0]))
    with pytest.raises(ValueError, match="no spatial conditioning"):
        prior(tf.zeros([1, 3, 4], tf.int32), tf.constant([0]), condition=tf.zeros([1, 1, 1], tf.int32))
    with pytest.raises(ValueError, match=r"top_k must be in \[1, num_embeddings\]"):
        sample_codes_graph(prior, 1, 1.0, 0, tf.constant([0]), top_k=K + 1)
    with pytest.raises(tf.errors.InvalidArgumentError, match="temperature must be > 0"):
        sample_codes_graph(prior, 1, 0.0, 0, tf.constant([0]))


def test_keras_round_trip_and_the_prior_family(tmp_path):
    prior = peaked(small_prior(num_classes=3, depth=2))
    codes, labels = random_codes([4, 3, 4], 5), tf.constant([0, 1, 2, 0])
    path = str(tmp_path / "prior.keras")
    prior.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.get_config() == prior.get_config()
    np.testing.assert_allclose(loaded(codes, labels).numpy(), prior(codes, labels).numpy(), atol=1e-5)
    family = priors.get("transformer")
    network = dict(
        num_filters=24, num_layers=None, kernel_size=3, dropout=0.1, attention_blocks=0, num_embeddings=K, num_classes=3
    )
    meta = {"format_version": 2, "latent_shape": [3, 4], "depth": 2, "prior_family": "transformer"}
    built = family.build(network, meta)
    assert isinstance(built, TransformerPrior) and priors.model_classes()["TransformerPrior"] is TransformerPrior
    assert (built.latent_shape, built.width, built.num_layers, built.depth) == ((3, 4), 24, 4, 2)
    assert built.grid_shapes == {"codes": (3, 4)} and built.num_codes == 12
