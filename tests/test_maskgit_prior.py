"""MaskGIT's prior: the cosine masking, bidirectional attention, the masked-token loss, and parallel
decoding against a NumPy reference of the paper's procedure."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import numpy_uniform, peaked, train_prior_on

from vqvae_tf.models import priors
from vqvae_tf.models.priors.maskgit import MaskGITPrior, keep_masked, sample_codes_graph

K = 10


def small_prior(num_classes=0, shape=(3, 4), depth=1, layers=2):
    keras.utils.set_random_seed(0)
    return MaskGITPrior(K, shape, width=16, num_layers=layers, num_heads=4, num_classes=num_classes, depth=depth)


def varied(prior):
    """Peaked weights without the head's bias and the last norm's shift, which alone would make
    one code the argmax everywhere: greedy decoding then depends on the context and the class."""
    peaked(prior, std=0.5)
    for v in (prior.head.bias, prior.final_norm.beta):
        v.assign(np.zeros(v.shape, np.float32))
    return prior


def test_random_mask_follows_the_cosine_schedule():
    prior = small_prior(shape=(4, 5))
    seed = tf.constant([3, 4])
    mask = prior.random_mask(64, seed).numpy()
    ratio = tf.random.stateless_uniform([64], seed).numpy()
    want = np.maximum(np.ceil(np.cos(np.float32(np.pi / 2) * ratio) * np.float32(20)), 1)
    np.testing.assert_array_equal(mask.reshape(64, 20).sum(-1), want)
    assert mask.shape == (64, 4, 5) and mask.dtype == bool


def test_every_unmasked_code_reaches_every_position_and_masked_codes_none():
    prior = peaked(small_prior(num_classes=2))
    codes = tf.random.stateless_uniform([1, 3, 4], [1, 1], maxval=K, dtype=tf.int32).numpy()
    mask = np.zeros([1, 3, 4], bool)
    mask[0, 1, 2] = True
    labels = tf.constant([1])
    base = prior(codes, mask, labels).numpy().reshape(12, K)
    for j in range(12):
        changed = codes.copy().reshape(12)
        changed[j] = (changed[j] + 1) % K
        moved = np.abs(prior(changed.reshape(1, 3, 4), mask, labels).numpy().reshape(12, K) - base).max(-1) > 1e-5
        assert moved.all() if j != 6 else not moved.any(), j  # position 6 is masked: its code is unseen


def test_the_loss_scores_the_masked_codes_only():
    prior = peaked(small_prior(num_classes=3))
    codes = tf.random.stateless_uniform([5, 3, 4], [2, 2], maxval=K, dtype=tf.int32)
    labels = tf.constant([0, 1, 2, 0, 1])
    seed = tf.constant([7, 8])
    mask = prior.random_mask(5, seed).numpy()
    logits = prior(codes, mask, labels).numpy().astype(np.float64)
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(log_softmax, codes.numpy()[..., None], -1)[..., 0]
    want = (nll * mask).sum((1, 2)) / mask.sum((1, 2))
    np.testing.assert_allclose(prior._nll((codes, labels), False, seed).numpy(), want, rtol=1e-5)


def test_train_step_lowers_the_masked_nll():
    prior = small_prior(layers=1)
    prior.compile(optimizer=keras.optimizers.Adam(1e-2))
    codes = tf.tile(tf.range(3)[None, :, None], [16, 1, 4]) % K  # each row repeats one code
    first, logs, after = train_prior_on(prior, codes, 40)
    assert set(logs) == {"loss", "bits_per_code"}
    assert after < 0.5 * first


def test_schedule_of_the_sampler():
    """floor(gamma((s + 1) / S) T) codes stay masked after step s, clamped to [1, unknown - 1]
    (google-research/maskgit: each step reveals one code at least and leaves one), 0 at the end."""
    for steps, length in ((8, 49), (3, 12), (12, 1024), (8, 12), (20, 6)):  # cos(pi / 3) * 12 is 6, not 5.9999995
        kept, unknown = [], length
        for s in range(steps):
            kept.append(int(keep_masked(tf.constant(s), steps, length, tf.constant([unknown]))[0]))
            unknown = kept[-1]
        want, unknown = [], length
        for s in range(steps - 1):
            count = math.floor(math.cos(math.pi / 2 * (s + 1) / steps) * length + 1e-9)
            want.append(max(1, min(unknown - 1, count)))
            unknown = want[-1]
        assert kept == want + [0], (steps, length)
        assert kept == sorted(kept, reverse=True)
    assert [int(k) for k in keep_masked(tf.constant(2), 8, 12, tf.constant([5, 1, 12]))] == [4, 1, 9]


def reference_decoding(prior, labels, uniforms, temperature=1.0, top_k=None, choice_temperature=0.0, guidance=0.0):
    """MaskGIT's decoding (google-research/maskgit's `decode`) in NumPy, fed `uniforms` [N, S, 2, T]:
    at step s every masked code is picked by the inverse CDF of softmax(logits / temperature) cut
    to the top_k at ``uniforms[:, s, 0]``; its confidence is its log-probability plus
    choice_temperature (1 - (s + 1) / S) Gumbel noise from ``uniforms[:, s, 1]``; the least
    confident stay masked, max(1, min(unknown - 1, floor(gamma((s + 1) / S) T))) of them, none
    after the last step. With guidance g the logits are (1 + g) conditional - g unconditional."""
    h, w = prior.latent_shape
    n, steps, length = len(labels), uniforms.shape[1], h * w
    codes, mask = np.zeros([n, length], np.int32), np.ones([n, length], bool)
    for s in range(steps):
        logits = prior(codes.reshape(n, h, w), mask.reshape(n, h, w), labels).numpy().reshape(n, length, K)
        if guidance:
            null = np.full(n, prior.num_classes)
            unconditional = prior(codes.reshape(n, h, w), mask.reshape(n, h, w), null).numpy().reshape(n, length, K)
            logits = logits + guidance * (logits - unconditional)
        scaled = logits.astype(np.float64) / temperature
        cut = scaled
        if top_k is not None:
            kth = np.sort(scaled, axis=-1)[..., -top_k][..., None]
            cut = np.where(scaled < kth, -np.inf, scaled)
        cdf = np.cumsum(np.exp(cut - cut.max(-1, keepdims=True)), axis=-1)
        picked = (cdf <= uniforms[:, s, 0, :, None] * cdf[..., -1:]).sum(-1)
        codes = np.where(mask, picked, codes)
        log_probs = scaled - np.log(np.exp(scaled).sum(-1, keepdims=True))
        confidence = np.take_along_axis(log_probs, codes[..., None], -1)[..., 0]
        gumbel = -np.log(-np.log(np.maximum(uniforms[:, s, 1], 1e-20)))
        confidence = np.where(mask, confidence + choice_temperature * (1 - (s + 1) / steps) * gumbel, np.inf)
        count = math.floor(math.cos(math.pi / 2 * (s + 1) / steps) * length + 1e-9)
        order = np.argsort(confidence, axis=-1, kind="stable")
        new_mask = np.zeros_like(mask)
        for i in range(n):
            keep = 0 if s == steps - 1 else max(1, min(mask[i].sum() - 1, count))
            new_mask[i, order[i, :keep]] = True
        mask = new_mask
    return codes.reshape(n, h, w)


def seeded_uniforms(seed, n, steps, length):
    """The uniforms `sample_codes_graph` draws for `seed`: step s's picks from stream s, its choice
    noise from stream -1 - s (`hash_random`), element [i, t] of each."""
    draw = lambda stream: numpy_uniform(seed, stream, n * length).reshape(n, length)  # noqa: E731
    return np.stack([np.stack([draw(s), draw(-1 - s)], axis=1) for s in range(steps)], axis=1)


@pytest.mark.parametrize("steps,guidance,depth", [(4, 0.0, 1), (8, 0.0, 2), (3, 2.0, 1)])
def test_greedy_parallel_decoding_matches_the_numpy_reference(steps, guidance, depth):
    prior = varied(small_prior(num_classes=3, depth=depth))
    labels = np.array([0, 1, 2, 1], np.int32)
    want = reference_decoding(prior, labels, np.full([4, steps, 2, 12], 0.5), top_k=1, guidance=guidance)
    assert len(np.unique(want)) > 1 and (want[0] != want[1]).any()  # context and class matter
    got = sample_codes_graph(prior, 4, 1.0, 0, labels, top_k=1, steps=steps, choice_temperature=0.0, guidance=guidance)
    np.testing.assert_array_equal(got.numpy(), want)


@pytest.mark.parametrize(
    "steps,temperature,top_k,choice_temperature,guidance",
    [(8, 1.0, None, 4.5, 0.0), (5, 0.7, 4, 2.0, 1.5), (12, 1.6, None, 4.5, 0.0)],
)
def test_random_parallel_decoding_matches_the_numpy_reference(steps, temperature, top_k, choice_temperature, guidance):
    """The full random decoding (temperature, top_k, annealed choice noise, guidance, the clamp) on
    12-code grids, seeded and from given uniforms (the TFLite generator's path), code for code."""
    prior = varied(small_prior(num_classes=3))
    n, seed = 6, 3
    labels = np.array([0, 1, 2, 1, 0, 2], np.int32)
    uniforms = seeded_uniforms(seed, n, steps, 12)
    args = dict(temperature=temperature, top_k=top_k, choice_temperature=choice_temperature, guidance=guidance)
    want = reference_decoding(prior, labels, uniforms, **args)
    assert len(np.unique(want)) > 3
    options = dict(top_k=top_k, steps=steps, choice_temperature=choice_temperature, guidance=guidance)
    got = sample_codes_graph(prior, n, temperature, seed, labels, **options).numpy()
    np.testing.assert_array_equal(got, want)
    if guidance == 0 and top_k is None and choice_temperature == 4.5:  # the generator's defaults
        from_uniforms = prior.sample_from_uniforms_graph(tf.constant(uniforms, tf.float32), temperature, labels)
        np.testing.assert_array_equal(from_uniforms.numpy(), want)


def test_sampling_is_seeded_and_fills_the_grid():
    prior = peaked(small_prior(num_classes=3), std=0.5)
    labels = tf.constant([0, 1, 2, 0])
    sample = tf.function(sample_codes_graph, autograph=False)
    a, b = (sample(prior, 4, 1.0, 5, labels, steps=tf.constant(6)).numpy() for _ in range(2))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (4, 3, 4) and a.dtype == np.int32  # (the codes themselves: the reference tests above)
    assert (sample(prior, 4, 1.0, 6, labels, steps=tf.constant(6)).numpy() != a).any()


def test_bad_arguments():
    prior = small_prior(num_classes=3)
    with pytest.raises(ValueError, match="pass labels"):
        sample_codes_graph(prior, 2, 1.0, 0)
    with pytest.raises(tf.errors.InvalidArgumentError, match="steps must be > 0"):
        sample_codes_graph(prior, 2, 1.0, 0, tf.constant([0, 1]), steps=0)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"labels must be in \[0, 3\)"):
        sample_codes_graph(prior, 1, 1.0, 0, tf.constant([3]))
    with pytest.raises(ValueError, match="class_dropout"):
        MaskGITPrior(K, (3, 4), width=16, num_classes=2, class_dropout=1.0)


def test_keras_round_trip_and_the_prior_family(tmp_path):
    prior = peaked(small_prior(num_classes=3, depth=2))
    codes = tf.random.stateless_uniform([2, 3, 4], [5, 5], maxval=K, dtype=tf.int32)
    mask, labels = tf.constant(np.arange(24).reshape(2, 3, 4) % 3 == 0), tf.constant([0, 2])
    path = str(tmp_path / "prior.keras")
    prior.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.get_config() == prior.get_config()
    np.testing.assert_allclose(loaded(codes, mask, labels).numpy(), prior(codes, mask, labels).numpy(), atol=1e-5)
    network = dict(
        num_filters=24, num_layers=3, kernel_size=3, dropout=0.0, attention_blocks=0, num_embeddings=K, num_classes=3
    )
    built = priors.get("maskgit").build(network, {"format_version": 2, "latent_shape": [3, 4], "depth": 2})
    assert isinstance(built, MaskGITPrior) and (built.width, built.num_layers, built.depth) == (24, 3, 2)
