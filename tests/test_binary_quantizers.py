"""LFQ and BSQ: NumPy references of the forward pass and the entropy terms, gradient routing,
index <-> value round trips over every sign pattern, tf.distribute equal to one replica, bad
arguments, and both inside VQVAE (losses, training, config round trip)."""

import dataclasses
import itertools

import numpy as np
import pytest
import tensorflow as tf

from vqvae_tf import VQVAE, BinarySphericalQuantizer, LookupFreeQuantizer, get_config


def np_bits(z):
    return (z > 0).astype(np.int64)


def np_index(z):
    return (np_bits(z) * (2 ** np.arange(z.shape[-1]))).sum(-1)


def np_entropy(p, axis=-1):
    p = np.clip(p, 1e-30, 1.0)
    return -(p * np.log(p)).sum(axis)


def np_all_codes(d):
    """float64 [2^d, d] of +-1: row c holds the signs of code c (bit i = channel i)."""
    return np.array([[1.0 if (c >> i) & 1 else -1.0 for i in range(d)] for c in range(2**d)])


def np_lfq(z, tau, beta, weight, gamma):
    """LFQ in float64 NumPy, the batch entropy from a full softmax over the 2^D codes of 2 z.c / tau
    (MAGVIT-v2 / lucidrains), not from the per-channel factorisation the layer uses."""
    flat = z.reshape(-1, z.shape[-1]).astype(np.float64)
    q = np.where(flat > 0, 1.0, -1.0)
    logits = 2.0 * flat @ np_all_codes(z.shape[-1]).T / tau
    logits -= logits.max(-1, keepdims=True)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    penalty = np_entropy(probs).mean() - gamma * np_entropy(probs.mean(0))
    return q.reshape(z.shape), np_index(z), beta * np.mean((flat - q) ** 2), weight * penalty


def np_bsq(z, tau, beta, weight, gamma):
    """BSQ in float64 NumPy (the paper's factorised entropy: per channel, over +-1/sqrt(D))."""
    flat = z.reshape(-1, z.shape[-1]).astype(np.float64)
    d = flat.shape[-1]
    u = flat / np.linalg.norm(flat, axis=-1, keepdims=True)
    q = np.where(u > 0, 1.0, -1.0) / np.sqrt(d)
    # Softmax over the two values +-1/sqrt(D) of each channel of 2 u_i q_i / tau.
    plus = 1.0 / (1.0 + np.exp(-4.0 * u / np.sqrt(d) / tau))
    pair = np.stack([plus, 1.0 - plus], -1)
    penalty = np_entropy(pair).sum(-1).mean() - gamma * np_entropy(np.stack([plus.mean(0), 1 - plus.mean(0)], -1)).sum()
    # bsq-vit's commitment: beta * the mean over vectors of ||u - q||^2 (a sum over channels).
    return q.reshape(z.shape), np_index(z), beta * np.mean(((u - q) ** 2).sum(-1)), weight * penalty


LAYERS = {
    "lfq": (LookupFreeQuantizer, np_lfq, 0.01),
    "bsq": (BinarySphericalQuantizer, np_bsq, 1.0),
}


@pytest.mark.parametrize("kind", list(LAYERS))
@pytest.mark.parametrize("tau", [None, 0.5])
def test_forward_and_entropy_match_numpy(kind, tau):
    cls, ref, default_tau = LAYERS[kind]
    z = np.random.default_rng(1).normal(size=(3, 4, 5, 6)).astype(np.float32) * 0.3
    layer = cls(6, entropy_weight=0.2, commitment_cost=0.3, diversity_weight=0.7, entropy_temperature=tau)
    out = layer(z, training=True)
    q, idx, commit, penalty = ref(z, tau or default_tau, 0.3, 0.2, 0.7)
    np.testing.assert_allclose(out["quantized"].numpy(), q, atol=1e-6)
    np.testing.assert_array_equal(out["indices"].numpy(), idx)
    np.testing.assert_allclose(float(out["commitment_loss"]), commit, rtol=1e-5)
    np.testing.assert_allclose(float(out["entropy_loss"]), penalty, rtol=1e-4, atol=1e-6)
    counts = np.bincount(idx.reshape(-1), minlength=64) / idx.size
    np.testing.assert_allclose(float(out["perplexity"]), np.exp(np_entropy(counts)), rtol=1e-5)
    assert float(out["codebook_loss"]) == 0.0 and out["indices"].dtype == tf.int32


@pytest.mark.parametrize("kind", list(LAYERS))
def test_every_sign_pattern_round_trips(kind):
    d = 5
    layer = LAYERS[kind][0](d)
    codes = tf.range(2**d)
    values = layer.lookup(codes)
    scale = 1.0 if kind == "lfq" else 1 / np.sqrt(d)
    np.testing.assert_allclose(values.numpy(), np_all_codes(d) * scale, atol=1e-7)
    np.testing.assert_array_equal(layer.indices_of(values).numpy(), codes.numpy())
    np.testing.assert_array_equal(layer(values)["indices"].numpy(), codes.numpy())
    np.testing.assert_allclose(layer(values)["quantized"].numpy(), values.numpy(), atol=1e-6)
    np.testing.assert_allclose(layer.lookup(codes, codebook=layer.codebook).numpy(), values.numpy())
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"codes must be in \[0, 32\)"):
        layer.lookup(tf.constant([32]))


def test_lfq_gradients_route_straight_through_and_through_the_penalty():
    z = tf.Variable(np.random.default_rng(2).normal(size=(7, 4)).astype(np.float32))
    layer = LookupFreeQuantizer(4, entropy_temperature=1.0)
    upstream = tf.constant(np.random.default_rng(3).normal(size=(7, 4)).astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        out = layer(z, training=True)
        decoder_loss = tf.reduce_sum(out["quantized"] * upstream)
    np.testing.assert_allclose(tape.gradient(decoder_loss, z).numpy(), upstream.numpy())  # identity
    q = np.where(z.numpy() > 0, 1.0, -1.0)
    commit = tape.gradient(out["commitment_loss"], z).numpy()
    np.testing.assert_allclose(commit, 2 * 0.25 * (z.numpy() - q) / z.numpy().size, rtol=1e-5)
    entropy_grad = tape.gradient(out["entropy_loss"], z)
    # The penalty's gradient against central differences of the NumPy reference.
    eps, zn = 1e-3, z.numpy().astype(np.float64)
    numeric = np.zeros_like(zn)
    for i, j in itertools.product(range(7), range(4)):
        hi, lo = zn.copy(), zn.copy()
        hi[i, j] += eps
        lo[i, j] -= eps
        numeric[i, j] = (np_lfq(hi, 1.0, 0.25, 0.1, 1.0)[3] - np_lfq(lo, 1.0, 0.25, 0.1, 1.0)[3]) / (2 * eps)
    np.testing.assert_allclose(entropy_grad.numpy(), numeric, atol=2e-4)


def test_bsq_gradient_is_that_of_the_projection():
    z = tf.Variable(np.random.default_rng(4).normal(size=(3, 5)).astype(np.float32))
    layer = BinarySphericalQuantizer(5)
    with tf.GradientTape() as tape:
        quantized = layer(z)["quantized"]
    jacobian = tape.batch_jacobian(quantized, z).numpy()
    zn = z.numpy()
    for row, jac in zip(zn, jacobian):
        norm = np.linalg.norm(row)
        u = row / norm
        np.testing.assert_allclose(jac, (np.eye(5) - np.outer(u, u)) / norm, atol=1e-5)


@pytest.mark.parametrize("kind", list(LAYERS))
def test_mirrored_equals_one_replica(kind, mirrored):
    """The penalty is that of the global batch, on every replica, and the summed gradient of the
    replica-scaled penalty equals the gradient on the whole batch."""
    cls = LAYERS[kind][0]
    z = np.random.default_rng(5).normal(size=(10, 3)).astype(np.float32)
    weights = np.array([0.5, 1.5, -1.0], np.float32)
    single = cls(3, entropy_temperature=0.7)
    w = tf.Variable(weights)
    with tf.GradientTape() as tape:
        out = single(z * w, training=True)
    want_grad = tape.gradient(out["entropy_loss"], w).numpy()
    with mirrored.scope():
        multi = cls(3, entropy_temperature=0.7)
        w_multi = tf.Variable(weights)

    def replica_step(x):
        with tf.GradientTape() as tape:
            out = multi(x * w_multi, training=True)
            scaled = out["entropy_loss"] / tf.distribute.get_replica_context().num_replicas_in_sync
        return out["entropy_loss"], out["perplexity"], tape.gradient(scaled, w_multi)

    @tf.function
    def step(x):
        return mirrored.run(replica_step, args=(x,))

    split = mirrored.experimental_distribute_values_from_function(  # an uneven split: 7 and 3 rows
        lambda ctx: tf.constant(z[:7] if ctx.replica_id_in_sync_group == 0 else z[7:])
    )
    losses, perplexities, grads = step(split)
    for loss, perplexity in zip(
        mirrored.experimental_local_results(losses), mirrored.experimental_local_results(perplexities)
    ):
        np.testing.assert_allclose(float(loss), float(out["entropy_loss"]), rtol=1e-5)
        np.testing.assert_allclose(float(perplexity), float(out["perplexity"]), rtol=1e-5)
    summed = mirrored.reduce(tf.distribute.ReduceOp.SUM, grads, axis=None).numpy()
    np.testing.assert_allclose(summed, want_grad, rtol=1e-4, atol=1e-7)
    assert np.abs(want_grad).max() > 1e-4  # the penalty does move the weights


@pytest.mark.parametrize(
    "cls, kwargs, error, message",
    [
        (LookupFreeQuantizer, dict(embedding_dim=17), ValueError, "embedding_dim must be <= 16, got 17"),
        (BinarySphericalQuantizer, dict(embedding_dim=17), ValueError, "embedding_dim must be <= 16, got 17"),
        (LookupFreeQuantizer, dict(embedding_dim=0), ValueError, "embedding_dim must be a positive integer"),
        (LookupFreeQuantizer, dict(embedding_dim=4, num_embeddings=10), ValueError, "has 2\\^4=16 codes"),
        (BinarySphericalQuantizer, dict(embedding_dim=4, entropy_weight=-1), ValueError, "entropy_weight must be >= 0"),
        (
            LookupFreeQuantizer,
            dict(embedding_dim=4, entropy_temperature=0.0),
            ValueError,
            "entropy_temperature must be > 0",
        ),
    ],
)
def test_bad_arguments_refused(cls, kwargs, error, message):
    with pytest.raises(error, match=message):
        cls(**kwargs)


@pytest.mark.parametrize("kind", list(LAYERS))
def test_bad_inputs_refused(kind):
    layer = LAYERS[kind][0](4)
    with pytest.raises(TypeError, match="float tensor"):
        layer(tf.zeros([2, 4], tf.int32))
    with pytest.raises(ValueError, match="embedding_dim=4"):
        layer(tf.zeros([2, 5]))
    with pytest.raises(TypeError, match="integers"):
        layer.lookup(tf.zeros([2], tf.float32))


def tiny(**fields):
    return dataclasses.replace(get_config("tiny"), **fields).validate()


@pytest.mark.parametrize("kind", list(LAYERS))
def test_in_vqvae_the_penalty_is_part_of_the_loss(kind):
    config = tiny(quantizer=kind, embedding_dim=4, entropy_weight=0.5)
    assert (config.num_embeddings, config.embedding_dim) == (16, 4)  # K = 2^D, derived
    model = config.build(data_variance=0.1)
    assert isinstance(model.quantizer, LAYERS[kind][0]) and model.quantizer.entropy_weight == 0.5
    x = tf.random.stateless_uniform([4, 28, 28, 1], seed=[1, 2])
    losses = model.compute_losses(x, training=False)
    total = sum(float(losses[k]) for k in ("reconstruction_loss", "codebook_loss", "commitment_loss", "entropy_loss"))
    np.testing.assert_allclose(float(losses["loss"]), total, rtol=1e-6)
    assert float(losses["entropy_loss"]) != 0.0
    model.compile(optimizer=config.make_optimizer())
    logs = model.train_on_batch(x, return_dict=True)
    assert "entropy_loss" in logs and np.isfinite(logs["loss"])
    codes = model.encode(x)
    np.testing.assert_array_equal(codes.numpy(), np_index(model.encoder_outputs(x).numpy()))  # the signs' bits
    np.testing.assert_allclose(model.decode(codes).numpy(), model(x).numpy(), atol=1e-5)
    reloaded = VQVAE.from_config(model.get_config())
    assert reloaded.get_config() == model.get_config()


def test_config_refuses_lfq_bits_it_cannot_hold():
    with pytest.raises(ValueError, match="embedding_dim must be <= 16, got 32"):
        tiny(quantizer="lfq", embedding_dim=32)
