"""FSQ, residual VQ, the cosine distance and the rotation trick: NumPy references, gradients,
index <-> value round trips, tf.distribute equivalence, serialization and bad arguments."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from vqvae_tf import (
    BinarySphericalQuantizer,
    CodebookUsage,
    FiniteScalarQuantizer,
    LookupFreeQuantizer,
    ResidualVectorQuantizer,
    VectorQuantizer,
    VectorQuantizerEMA,
)
from vqvae_tf.layers.quantizers import rotation_trick

# ---------------------------------------------------------------------------------------- FSQ


def np_fsq(z, levels):
    """The paper's FSQ (appendix A.1) in float64 NumPy: values in [-1, 1] and mixed-radix indices."""
    levels = np.asarray(levels, np.float64)
    half_l = (levels - 1) * (1 - 1e-3) / 2
    offset = np.where(levels % 2 == 1, 0.0, 0.5)
    shift = np.where(offset / half_l < 1, np.arctanh(np.minimum(offset / half_l, 0.999)), 0.0)  # L = 2: none
    bounded = np.tanh(z + shift) * half_l - offset
    half_width = np.floor(levels / 2)
    values = np.round(bounded) / half_width
    digits = np.round(values * half_width + half_width).astype(np.int64)
    basis = np.concatenate([[1], np.cumprod(levels[:-1])]).astype(np.int64)
    return values, (digits * basis).sum(-1), bounded


def np_fsq_notebook(z, levels):
    """The paper's reference code (google-research FSQ notebook): bound with a tan shift, round,
    scale by half_width; codes by the same mixed radix. Written from the paper, not the layer."""
    levels = np.asarray(levels, np.float64)
    half_l = (levels - 1) * (1 - 1e-3) / 2
    offset = np.where(levels % 2 == 1, 0.0, 0.5)
    bounded = np.tanh(z + np.tan(offset / half_l)) * half_l - offset
    half_width = levels // 2
    digits = (np.round(bounded) + half_width).astype(np.int64)
    basis = np.concatenate([[1], np.cumprod(levels[:-1])]).astype(np.int64)
    return (digits * basis).sum(-1)


@pytest.mark.parametrize("levels", [(8, 5, 5, 5), (8, 6, 5), (7, 3)])
def test_fsq_agrees_with_the_paper_for_levels_above_two(levels):
    """Odd L: the same function. Even L > 2: the arctanh shift differs from the notebook's tan by
    O(x^5), so the codes agree except for inputs within ~1e-4 of a rounding boundary."""
    z = np.random.default_rng(21).normal(size=(20000, len(levels))) * 1.5
    ours = FiniteScalarQuantizer(levels).indices_of(z.astype(np.float32)).numpy()
    assert (ours == np_fsq_notebook(z, levels)).mean() > 0.999


def test_fsq_two_levels_split_at_zero_not_at_the_papers_minus_1_56():
    """The documented departure: L = 2's boundary sits at z = 0 (the notebook's at z = -1.56)."""
    z = np.array([[-2.0], [-1.0], [-0.01], [0.01], [1.0]])
    ours = FiniteScalarQuantizer([2]).indices_of(z.astype(np.float32)).numpy()
    np.testing.assert_array_equal(ours, [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(np_fsq_notebook(z, [2]), [0, 1, 1, 1, 1])
    # So a zero-mean input uses both levels evenly here; the notebook's puts 94% on one side.
    noise = np.random.default_rng(22).normal(size=(10000, 1))
    assert abs(FiniteScalarQuantizer([2]).indices_of(noise.astype(np.float32)).numpy().mean() - 0.5) < 0.02
    assert np_fsq_notebook(noise, [2]).mean() > 0.9


@pytest.mark.parametrize("levels", [(8, 5, 5, 5), (8, 6, 5), (2, 3), (7,)])
def test_fsq_matches_numpy(levels):
    rng = np.random.default_rng(0)
    z = (rng.normal(size=(4, 5, 3, len(levels))) * 2).astype(np.float32)
    fsq = FiniteScalarQuantizer(levels)
    out = fsq(z)
    values, indices, _ = np_fsq(z.astype(np.float64), levels)
    np.testing.assert_allclose(out["quantized"].numpy(), values, atol=1e-6)
    np.testing.assert_array_equal(out["indices"].numpy(), indices)
    assert out["indices"].dtype == tf.int32
    assert float(out["codebook_loss"]) == 0.0 and float(out["commitment_loss"]) == 0.0
    counts = np.bincount(indices.reshape(-1), minlength=fsq.num_embeddings) / indices.size
    nz = counts[counts > 0]
    np.testing.assert_allclose(float(out["perplexity"]), np.exp(-(nz * np.log(nz)).sum()), rtol=1e-5)
    # Every channel takes exactly its L levels, symmetric around 0 for odd L.
    grid = fsq.codebook.numpy()
    for c, level in enumerate(levels):
        assert len(np.unique(grid[:, c])) == level
        assert grid[:, c].min() >= -1.0 and grid[:, c].max() <= 1.0


@pytest.mark.parametrize("levels", [(8, 5, 5, 5), (8, 6, 5), (4, 4, 4, 4)])
def test_fsq_index_value_round_trip(levels):
    fsq = FiniteScalarQuantizer(levels)
    k = int(np.prod(levels))
    assert fsq.num_embeddings == k and fsq.embedding_dim == len(levels)
    everything = tf.range(k)
    grid = fsq.lookup(everything)
    assert len(np.unique(grid.numpy(), axis=0)) == k  # k distinct points
    np.testing.assert_array_equal(fsq.indices_from_values(grid).numpy(), everything.numpy())  # value -> index
    z = tf.random.stateless_normal([50, len(levels)], seed=[0, 1]) * 3
    out = fsq(z)
    np.testing.assert_array_equal(fsq.indices_from_values(out["quantized"]).numpy(), out["indices"].numpy())
    np.testing.assert_allclose(fsq.lookup(out["indices"]).numpy(), out["quantized"].numpy(), atol=1e-6)
    np.testing.assert_array_equal(fsq.indices_of(z).numpy(), out["indices"].numpy())
    np.testing.assert_allclose(fsq.lookup(everything, codebook=fsq.codebook).numpy(), grid.numpy())


def test_fsq_gradient_is_the_bound_derivative():
    levels = (8, 5, 3)
    rng = np.random.default_rng(1)
    z = tf.constant(rng.normal(size=(6, 3)).astype(np.float32))
    fsq = FiniteScalarQuantizer(levels)
    weights = tf.constant(rng.normal(size=(6, 3)).astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(z)
        loss = tf.reduce_sum(fsq(z)["quantized"] * weights)
    grad = tape.gradient(loss, z).numpy()
    # Straight-through rounding: d/dz of bound(z) / half_width = (1 - tanh^2) * half_l / half_width.
    lv = np.asarray(levels, np.float64)
    half_l = (lv - 1) * (1 - 1e-3) / 2
    shift = np.arctanh(np.where(lv % 2 == 1, 0.0, 0.5) / half_l)  # (no L = 2 here)
    expected = (1 - np.tanh(z.numpy() + shift) ** 2) * half_l / np.floor(lv / 2) * weights.numpy()
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(levels=[]), "must not be empty"),
        (dict(levels=[8, 1]), "integer >= 2"),
        (dict(levels=[8, 2.5]), "integer >= 2"),
        (dict(levels=8), "list of integers"),
        (dict(levels=[8, 5], embedding_dim=4), "embedding_dim must be len\\(levels\\)=2"),
        (dict(levels=[1024] * 3), "at most"),
    ],
)
def test_fsq_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FiniteScalarQuantizer(**kwargs)


def test_fsq_bad_input():
    fsq = FiniteScalarQuantizer([8, 5])
    with pytest.raises(ValueError, match="len\\(levels\\)=2"):
        fsq(tf.zeros([2, 3]))
    with pytest.raises(TypeError, match="float"):
        fsq(tf.zeros([2, 2], tf.int32))
    with pytest.raises(tf.errors.InvalidArgumentError, match="codes must be in \\[0, 40\\)"):
        fsq.lookup(tf.constant([0, 40]))
    with pytest.raises(ValueError, match="needs data_init=True"):
        FiniteScalarQuantizer([8, 5], data_init=False).reinitialize()


def test_fsq_data_init_spreads_small_inputs_over_the_levels():
    """An encoder's small initial outputs would all round to the centre code; the first training
    call scales each channel to unit RMS (then the scale stays until `reinitialize`)."""
    rng = np.random.default_rng(12)
    z = (rng.normal(size=(64, 3)) * [0.02, 0.05, 0.01]).astype(np.float32)
    fsq = FiniteScalarQuantizer([8, 5, 5])
    assert float(fsq(z)["perplexity"]) == 1.0  # before: one code
    fsq(z, training=True)
    np.testing.assert_allclose(fsq.input_scale.numpy(), 1.0 / np.sqrt((z.astype(np.float64) ** 2).mean(0)), rtol=1e-5)
    assert float(fsq(z)["perplexity"]) > 10.0
    values, indices, _ = np_fsq(z * fsq.input_scale.numpy(), [8, 5, 5])
    np.testing.assert_array_equal(fsq(z)["indices"].numpy(), indices)
    scale = fsq.input_scale.numpy()
    fsq(z * 10, training=True)
    np.testing.assert_array_equal(fsq.input_scale.numpy(), scale)  # set once
    fsq.reinitialize()
    fsq(z * 10, training=True)
    np.testing.assert_allclose(fsq.input_scale.numpy(), scale / 10, rtol=1e-5)
    fixed = FiniteScalarQuantizer([8, 5, 5], data_init=False)
    fixed(z, training=True)
    np.testing.assert_array_equal(fixed.input_scale.numpy(), np.ones(3))


def test_fsq_mirrored_equals_single_replica(mirrored):
    z = np.random.default_rng(13).normal(size=(8, 3)).astype(np.float32) * 0.1
    single = FiniteScalarQuantizer([8, 5, 5])
    single_out = single(z, training=True)
    with mirrored.scope():
        multi = FiniteScalarQuantizer([8, 5, 5])
        multi.build((None, 3))

    @tf.function
    def step(x):
        return mirrored.run(lambda v: multi(v, training=True)["perplexity"], args=(x,))

    split = mirrored.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(z[ctx.replica_id_in_sync_group * 6 : 6 + ctx.replica_id_in_sync_group * 2])
    )
    perplexities = mirrored.experimental_local_results(step(split))
    for p in perplexities:  # of the global batch
        np.testing.assert_allclose(float(p), float(single_out["perplexity"]), rtol=1e-5)
    for value in mirrored.experimental_local_results(multi.input_scale.value):
        np.testing.assert_allclose(value.numpy(), single.input_scale.numpy(), rtol=1e-5)


# ---------------------------------------------------------------------------------------- RVQ

K, D = 6, 3


def np_nearest(z, codebook):
    d = ((z[:, None, :].astype(np.float64) - codebook[None].astype(np.float64)) ** 2).sum(-1)
    return d.argmin(1)


def make_rvq(q=3, **kwargs):
    rvq = ResidualVectorQuantizer(q, K, D, **kwargs)
    rvq.build((None, D))
    rng = np.random.default_rng(2)
    for i, stage in enumerate(rvq.stages):
        cb = rng.normal(size=(K, D)).astype(np.float32) / (i + 1)
        stage._codebook.assign(cb)
        stage.ema_dw.assign(cb)
    return rvq


def test_rvq_matches_numpy():
    rvq = make_rvq(3, commitment_cost=0.3)
    z = np.random.default_rng(3).normal(size=(2, 4, 5, D)).astype(np.float32)
    out = rvq(z)
    flat = z.reshape(-1, D).astype(np.float64)
    residual, total, commitment, indices = flat.copy(), np.zeros_like(flat), 0.0, []
    for stage in rvq.stages:
        cb = stage.codebook.numpy().astype(np.float64)
        idx = np_nearest(residual, cb)
        commitment += 0.3 * ((residual - cb[idx]) ** 2).mean()
        residual, total = residual - cb[idx], total + cb[idx]
        indices.append(idx)
    np.testing.assert_array_equal(out["indices"].numpy(), np.stack(indices, -1).reshape(2, 4, 5, 3))
    np.testing.assert_allclose(out["quantized"].numpy(), total.reshape(z.shape), atol=1e-5)
    np.testing.assert_allclose(float(out["commitment_loss"]), commitment, rtol=1e-5)
    assert float(out["codebook_loss"]) == 0.0
    # Indices <-> vectors without state, and on a constant copy of the codebooks.
    np.testing.assert_allclose(rvq.lookup(out["indices"]).numpy(), total.reshape(z.shape), atol=1e-5)
    np.testing.assert_array_equal(rvq.indices_of(z).numpy(), out["indices"].numpy())
    frozen = tf.constant(rvq.codebook.numpy())
    np.testing.assert_array_equal(rvq.indices_of(z, frozen).numpy(), out["indices"].numpy())
    np.testing.assert_allclose(rvq.lookup(out["indices"], frozen).numpy(), total.reshape(z.shape), atol=1e-5)


def test_rvq_kmeans_install_fits_each_stage_to_the_installed_residuals():
    """On the install step every stage's k-means sees the residuals that the *installed* codebooks
    of the stages before it leave (issue #26, item 1): stage 1's codebook equals that of a lone
    stage with its seed installed on those residuals, and the output is of the installed codes."""
    rng = np.random.default_rng(11)
    z = (rng.normal(size=(256, 4)) * [3.0, 1.0, 0.5, 0.2]).astype(np.float32)
    rvq = ResidualVectorQuantizer(2, 8, 4, kmeans_init=True, seed=3)
    out = rvq(z, training=True)
    stage0 = rvq.stages[0]
    first = stage0.lookup(stage0.indices_of(z)).numpy()
    lone = VectorQuantizerEMA(8, 4, kmeans_init=True, seed=4)  # stage i has seed + i
    lone(z - first, training=True)
    np.testing.assert_allclose(rvq.stages[1].codebook.numpy(), lone.codebook.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["quantized"].numpy(), rvq.lookup(rvq.indices_of(z)).numpy(), atol=1e-5)
    np.testing.assert_array_equal(out["indices"].numpy(), rvq.indices_of(z).numpy())
    # The second stage reduces the error of the first (it made it larger when fitted to the wrong residuals).
    assert np.mean((z - out["quantized"].numpy()) ** 2) < 0.8 * np.mean((z - first) ** 2)


@pytest.mark.parametrize("gradient", ["straight_through", "rotation"])
def test_rvq_gradient_reaches_the_input_once(gradient):
    rvq = make_rvq(3, gradient=gradient)
    z = tf.constant(np.random.default_rng(4).normal(size=(5, D)).astype(np.float32))
    g = tf.constant(np.random.default_rng(5).normal(size=(5, D)).astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(z)
        out = rvq(z)
        loss = tf.reduce_sum(out["quantized"] * g)
    grad = tape.gradient(loss, z).numpy()
    if gradient == "straight_through":
        np.testing.assert_allclose(grad, g.numpy(), rtol=1e-6)  # the identity, not Q times it
    else:
        np.testing.assert_allclose(
            grad, np_rotation_grad(z.numpy(), out["quantized"].numpy(), g.numpy()), rtol=1e-4, atol=1e-5
        )


def test_rvq_quantizer_dropout():
    rvq = make_rvq(3, quantizer_dropout=1.0)
    z = tf.constant(np.random.default_rng(6).normal(size=(7, D)).astype(np.float32))

    def partial_sums():  # the output with the first n stages, n = 1..3, at the current codebooks
        idx = rvq.indices_of(z).numpy()
        books = [stage.codebook.numpy() for stage in rvq.stages]
        return [sum(books[i][idx[:, i]] for i in range(n)) for n in (1, 2, 3)]

    seen = set()
    for _ in range(12):
        partial = partial_sums()
        got = rvq(z, training=True)["quantized"].numpy()
        matches = [n + 1 for n, p in enumerate(partial) if np.allclose(got, p, atol=1e-5)]
        assert matches, "the output is the sum of the first n stages"
        seen.add(matches[0])
    assert len(seen) > 1  # n is drawn per step
    np.testing.assert_allclose(rvq(z)["quantized"].numpy(), partial_sums()[-1], atol=1e-5)  # inference: all


def test_rvq_mirrored_equals_single_replica(mirrored):
    rng = np.random.default_rng(7)
    batches = [rng.normal(size=(8, D)).astype(np.float32) + i for i in range(3)]
    kwargs = dict(dead_code_threshold=2.0, kmeans_init=True, usage_decay=0.5, restart_grace_steps=2, decay=0.8)
    single = ResidualVectorQuantizer(2, K, D, **kwargs)
    single.build((None, D))
    for b in batches:
        single(b, training=True)
    with mirrored.scope():
        multi = ResidualVectorQuantizer(2, K, D, **kwargs)
        multi.build((None, D))

    @tf.function
    def step(x):
        mirrored.run(lambda v: multi(v, training=True), args=(x,))

    for b in batches:
        step(
            mirrored.experimental_distribute_values_from_function(
                lambda ctx, b=b: tf.constant(b[ctx.replica_id_in_sync_group * 5 : 5 + ctx.replica_id_in_sync_group * 3])
            )
        )
    assert int(single.num_restarts.numpy()) > 0
    for want, got in zip(single.weights, multi.weights):
        for value in mirrored.experimental_local_results(got.value):
            np.testing.assert_allclose(value.numpy(), want.numpy(), rtol=1e-5, atol=1e-5, err_msg=got.name)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(num_quantizers=0), ValueError, "num_quantizers must be a positive integer"),
        (dict(distance="cosine"), ValueError, "euclidean' only"),
        (dict(quantizer_dropout=1.5), ValueError, "quantizer_dropout"),
        (dict(gradient="sideways"), ValueError, "gradient must be one of"),
    ],
)
def test_rvq_bad_arguments(kwargs, error, message):
    args = {"num_quantizers": 2, "num_embeddings": K, "embedding_dim": D, **kwargs}
    with pytest.raises(error, match=message):
        ResidualVectorQuantizer(**args)


def test_rvq_bad_codes():
    rvq = make_rvq(2)
    with pytest.raises(ValueError, match="last axis of num_quantizers=2"):
        rvq.lookup(tf.zeros([4, 3], tf.int32))
    with pytest.raises(tf.errors.InvalidArgumentError, match="codes must be in"):
        rvq.lookup(tf.constant([[0, K]]))
    with pytest.raises(ValueError, match="embedding_dim=3"):
        ResidualVectorQuantizer(2, K, D)(tf.zeros([2, 4]))


# ------------------------------------------------------------------ cosine and the rotation trick


@pytest.mark.parametrize("cls", [VectorQuantizer, VectorQuantizerEMA])
def test_cosine_distance_matches_numpy(cls):
    rng = np.random.default_rng(8)
    vq = cls(K, D, distance="cosine")
    vq.build((None, D))
    raw = rng.normal(size=(K, D)).astype(np.float32) * rng.uniform(0.1, 5, size=(K, 1)).astype(np.float32)
    vq._codebook.assign(raw)
    z = rng.normal(size=(20, D)).astype(np.float32) * 3
    out = vq(z)
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    z_unit = z / np.linalg.norm(z, axis=1, keepdims=True)
    np.testing.assert_array_equal(out["indices"].numpy(), (z_unit @ unit.T).argmax(1))  # largest cosine
    np.testing.assert_allclose(out["quantized"].numpy(), unit[out["indices"].numpy()], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out["quantized"].numpy(), axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(vq.codebook.numpy(), unit, atol=1e-6)
    np.testing.assert_allclose(
        float(out["commitment_loss"]), 0.25 * ((z_unit - unit[out["indices"].numpy()]) ** 2).mean(), rtol=1e-5
    )
    np.testing.assert_array_equal(vq.indices_of(z).numpy(), out["indices"].numpy())
    trained = vq(z, training=True)  # the EMA / gradient state updates on normalised inputs
    np.testing.assert_array_equal(trained["indices"].numpy(), (z_unit @ unit.T).argmax(1))
    np.testing.assert_allclose(trained["quantized"].numpy(), unit[trained["indices"].numpy()], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(vq.codebook.numpy(), axis=1), 1.0, atol=1e-5)  # still unit codes
    z_next = z_unit @ vq.codebook.numpy().T
    np.testing.assert_array_equal(vq.indices_of(z).numpy(), z_next.argmax(1))  # nearest by cosine, updated codes


def np_rotation_grad(z, q, g):
    """(lambda R)^T g with R = I - 2 w w^T + 2 q^ z^T (Fifty et al. 2024), lambda = |q| / |z|."""
    out = []
    for zi, qi, gi in zip(z.astype(np.float64), q.astype(np.float64), g.astype(np.float64)):
        u, v = zi / np.linalg.norm(zi), qi / np.linalg.norm(qi)
        w = (u + v) / np.linalg.norm(u + v)
        rot = np.eye(len(zi)) - 2 * np.outer(w, w) + 2 * np.outer(v, u)
        np.testing.assert_allclose(rot @ rot.T, np.eye(len(zi)), atol=1e-9)  # a rotation...
        np.testing.assert_allclose(rot @ u, v, atol=1e-9)  # ...taking z's direction to q's
        out.append(np.linalg.norm(qi) / np.linalg.norm(zi) * rot.T @ gi)
    return np.stack(out)


def test_rotation_trick_forward_and_gradient():
    rng = np.random.default_rng(9)
    z = tf.constant(rng.normal(size=(8, 5)).astype(np.float32))
    q = tf.constant(rng.normal(size=(8, 5)).astype(np.float32))
    g = rng.normal(size=(8, 5)).astype(np.float32)
    with tf.GradientTape() as tape:
        tape.watch(z)
        out = rotation_trick(z, q)
        loss = tf.reduce_sum(out * g)
    np.testing.assert_array_equal(out.numpy(), q.numpy())  # forward: exactly q
    grad = tape.gradient(loss, z).numpy()
    np.testing.assert_allclose(grad, np_rotation_grad(z.numpy(), q.numpy(), g), rtol=1e-4, atol=1e-5)
    assert not np.allclose(grad, g)  # not the straight-through copy
    # The gradient keeps the angle: <grad, z> / (|grad||z|) == <g, q> / (|g||q|).
    for gr, zi, gi, qi in zip(grad, z.numpy(), g, q.numpy()):
        cos_in = gr @ zi / np.linalg.norm(gr) / np.linalg.norm(zi)
        cos_out = gi @ qi / np.linalg.norm(gi) / np.linalg.norm(qi)
        assert cos_in == pytest.approx(cos_out, abs=1e-4)


@pytest.mark.parametrize("cls", [VectorQuantizer, VectorQuantizerEMA])
def test_vq_rotation_gradient_option(cls):
    rng = np.random.default_rng(10)
    vq = cls(K, D, gradient="rotation")
    vq.build((None, D))
    vq._codebook.assign(rng.normal(size=(K, D)).astype(np.float32))
    z = tf.constant(rng.normal(size=(9, D)).astype(np.float32))
    g = rng.normal(size=(9, D)).astype(np.float32)
    with tf.GradientTape() as tape:
        tape.watch(z)
        out = vq(z)
        loss = tf.reduce_sum(out["quantized"] * g)
    q = vq.codebook.numpy()[out["indices"].numpy()]
    np.testing.assert_allclose(out["quantized"].numpy(), q, atol=1e-6)
    np.testing.assert_allclose(tape.gradient(loss, z).numpy(), np_rotation_grad(z.numpy(), q, g), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [(dict(distance="manhattan"), "distance must be one of"), (dict(gradient="x"), "gradient must be")],
)
def test_vq_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VectorQuantizer(K, D, **kwargs)


# ------------------------------------------------------------------ shared contract


def zoo():
    return [
        FiniteScalarQuantizer([8, 5, 3]),
        ResidualVectorQuantizer(2, K, D, kmeans_init=True, dead_code_threshold=1.0, gradient="rotation"),
        VectorQuantizerEMA(K, D, distance="cosine", gradient="rotation"),
    ]


@pytest.mark.parametrize("index", range(3))
def test_keras_round_trip(index, tmp_path):
    layer = zoo()[index]
    z = tf.random.stateless_normal([2, 4, 4, 3], seed=[1, 2])
    layer(z, training=True)
    model = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Lambda(lambda x: x), layer])
    path = str(tmp_path / "q.keras")
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=False)
    restored = loaded.layers[-1]
    assert type(restored) is type(layer) and restored.get_config() == layer.get_config()
    for a, b in zip(layer.weights, restored.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(layer(z)["indices"].numpy(), restored(z)["indices"].numpy())


@pytest.mark.parametrize("index", range(3))
@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision(index, policy):
    keras.config.set_dtype_policy(policy)
    try:
        layer = zoo()[index]
        z = tf.random.stateless_normal([2, 3, 3, 3], seed=[3, 4])
        out = layer(tf.cast(z, layer.compute_dtype), training=True)
        assert out["quantized"].dtype == layer.compute_dtype
        for key in ("codebook_loss", "commitment_loss", "perplexity"):
            assert out[key].dtype == tf.float32
        # float32 arithmetic: the codes are those of the (low-precision) input in float32.
        x = tf.cast(z, layer.compute_dtype)
        np.testing.assert_array_equal(layer(x)["indices"].numpy(), layer.indices_of(tf.cast(x, tf.float32)).numpy())
    finally:
        keras.config.set_dtype_policy("float32")


def test_codebook_usage_over_several_codebooks():
    usage = CodebookUsage(4, num_codebooks=2)
    usage.update_state(tf.constant([[[0, 1], [0, 1], [1, 1]]]))
    counts = usage.counts().numpy()
    np.testing.assert_array_equal(counts, [[2, 1, 0, 0], [0, 3, 0, 0]])
    result = usage.result()
    p = np.array([2, 1]) / 3
    np.testing.assert_allclose(float(result["perplexity"]), (np.exp(-(p * np.log(p)).sum()) + 1.0) / 2, rtol=1e-5)
    assert float(result["codebook_usage"]) == pytest.approx(3 / 8)


def test_every_quantizer_reports_the_same_keys():
    z = tf.random.stateless_normal([2, 3, 3, 3], seed=[5, 6])
    for layer in [*zoo(), VectorQuantizer(K, D), LookupFreeQuantizer(3), BinarySphericalQuantizer(3)]:
        assert set(layer(z, training=True)) == {
            "quantized",
            "indices",
            "codebook_loss",
            "commitment_loss",
            "perplexity",
            "entropy_loss",
        }
        out = layer(z)
        assert out["indices"].shape[:3] == (2, 3, 3)
        np.testing.assert_allclose(layer.lookup(out["indices"]).numpy(), out["quantized"].numpy(), atol=1e-5)
