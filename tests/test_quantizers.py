import keras
import numpy as np
import pytest
import tensorflow as tf

from vqvae_tf import CodebookUsage, VectorQuantizer, VectorQuantizerEMA

K, D = 12, 4
LAYERS = [VectorQuantizer, VectorQuantizerEMA]


def np_nearest(z, codebook):
    flat = z.reshape(-1, codebook.shape[1]).astype(np.float64)
    d = ((flat[:, None, :] - codebook[None].astype(np.float64)) ** 2).sum(-1)
    return d.argmin(1).reshape(z.shape[:-1])


def make(cls, **kw):
    layer = cls(K, D, **kw)
    layer.build((None, D))
    return layer


@pytest.mark.parametrize("cls", LAYERS)
@pytest.mark.parametrize("shape", [(7, D), (2, 3, 5, D)])
def test_indices_and_losses_match_numpy(cls, shape):
    rng = np.random.default_rng(0)
    vq = make(cls, commitment_cost=0.3)
    vq._codebook.assign(rng.normal(size=(K, D)).astype(np.float32))
    z = rng.normal(size=shape).astype(np.float32)
    out = vq(z, training=False)
    codebook = vq.codebook.numpy()
    idx = np_nearest(z, codebook)
    np.testing.assert_array_equal(out["indices"].numpy(), idx)
    assert out["indices"].dtype == tf.int32
    np.testing.assert_allclose(out["quantized"].numpy(), codebook[idx], atol=1e-6)
    mse = ((z - codebook[idx]) ** 2).mean()
    np.testing.assert_allclose(out["commitment_loss"].numpy(), 0.3 * mse, rtol=1e-5)
    expected_codebook_loss = mse if cls is VectorQuantizer else 0.0
    np.testing.assert_allclose(out["codebook_loss"].numpy(), expected_codebook_loss, rtol=1e-5)
    p = np.bincount(idx.ravel(), minlength=K) / idx.size
    p = p[p > 0]
    np.testing.assert_allclose(out["perplexity"].numpy(), np.exp(-(p * np.log(p)).sum()), rtol=1e-5)


@pytest.mark.parametrize("cls", LAYERS)
def test_straight_through_gradient_is_identity(cls):
    vq = make(cls)
    z = tf.random.normal([3, 2, 2, D])
    w = tf.random.normal([3, 2, 2, D])
    with tf.GradientTape() as tape:
        tape.watch(z)
        y = tf.reduce_sum(vq(z)["quantized"] * w)
    np.testing.assert_allclose(tape.gradient(y, z).numpy(), w.numpy(), atol=1e-6)


def test_loss_gradients_reach_only_their_side():
    vq = make(VectorQuantizer)
    z = tf.random.normal([16, D])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(z)
        out = vq(z)
    g_cb_z, g_cb_e = tape.gradient(out["codebook_loss"], [z, vq._codebook])
    g_cm_z, g_cm_e = tape.gradient(out["commitment_loss"], [z, vq._codebook])
    assert g_cb_z is None and g_cm_e is None
    assert np.abs(tf.convert_to_tensor(g_cb_e).numpy()).sum() > 0 and np.abs(g_cm_z.numpy()).sum() > 0
    # d/dz of beta*mean((z - e)^2) = 2 beta (z - e) / N
    e = tf.gather(vq.codebook, out["indices"]).numpy()
    np.testing.assert_allclose(g_cm_z.numpy(), 2 * 0.25 * (z.numpy() - e) / z.numpy().size, rtol=1e-4, atol=1e-7)


def np_ema_step(state, z, decay, eps):
    cs, dw, codebook = state
    idx = np_nearest(z, codebook).ravel()
    flat = z.reshape(-1, D).astype(np.float64)
    counts = np.bincount(idx, minlength=K).astype(np.float64)
    sums = np.zeros((K, D))
    np.add.at(sums, idx, flat)
    cs = decay * cs + (1 - decay) * counts
    dw = decay * dw + (1 - decay) * sums
    n = cs.sum()
    smoothed = (cs + eps) / (n + K * eps) * n
    return cs, dw, dw / smoothed[:, None]


@pytest.mark.parametrize("mode", ["eager", "function"])
def test_ema_update_matches_numpy_over_steps(mode):
    rng = np.random.default_rng(1)
    vq = make(VectorQuantizerEMA, decay=0.9, epsilon=1e-3)
    state = (np.ones(K), vq.codebook.numpy().astype(np.float64), vq.codebook.numpy().astype(np.float64))
    step = vq if mode == "eager" else tf.function(lambda z: vq(z, training=True))
    for _ in range(5):
        z = rng.normal(size=(4, 3, 3, D)).astype(np.float32)
        if mode == "eager":
            vq(z, training=True)
        else:
            step(z)
        state = np_ema_step(state, z, 0.9, 1e-3)
        np.testing.assert_allclose(vq.ema_cluster_size.numpy(), state[0], rtol=1e-5)
        np.testing.assert_allclose(vq.ema_dw.numpy(), state[1], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(vq.codebook.numpy(), state[2], rtol=1e-4, atol=1e-6)
    assert all(not v.trainable for v in vq.weights)


@pytest.mark.parametrize("cls", LAYERS)
@pytest.mark.parametrize("mode", ["eager", "function"])
def test_state_unchanged_when_not_training(cls, mode):
    vq = make(cls, dead_code_threshold=5.0, kmeans_init=True)
    before = [v.numpy().copy() for v in vq.weights]
    call = (lambda z: vq(z, training=False)) if mode == "eager" else tf.function(lambda z: vq(z, training=False))
    for _ in range(3):
        call(tf.random.normal([8, D]))
    for b, v in zip(before, vq.weights):
        np.testing.assert_array_equal(b, v.numpy())
    vq(tf.random.normal([8, D]), training=True)
    assert any(not np.array_equal(b, v.numpy()) for b, v in zip(before, vq.weights))


def with_far_codes(vq):
    """`vq` with every code but 0 far from N(0, 1) data: without restarts only code 0 is picked."""
    far = np.full((K, D), 100.0, np.float32)
    far[0] = 0.0
    vq._codebook.assign(far)
    if isinstance(vq, VectorQuantizerEMA):
        vq.ema_dw.assign(far)
    return vq


@pytest.mark.parametrize("cls", LAYERS)
def test_dead_code_restart_revives_unused_codes(cls):
    rng = np.random.default_rng(2)
    data = rng.normal(size=(256, D)).astype(np.float32)

    def used_after_training(threshold):
        vq = with_far_codes(make(cls, dead_code_threshold=threshold))
        step = tf.function(lambda z: vq(z, training=True))
        for _ in range(5):
            step(data)
        return len(np.unique(vq(data)["indices"].numpy()))

    assert used_after_training(0.0) == 1
    assert used_after_training(1.0) >= K - 2


@pytest.mark.parametrize("cls", LAYERS)
def test_restarts_beyond_the_per_step_candidates_come_in_later_steps(cls, monkeypatch):
    """With fewer candidates a step than dead codes (`MAX_RESTART_CANDIDATES`: 2048, here 4), the
    lowest-numbered dead codes are restarted first and the rest in the steps after."""
    monkeypatch.setattr(cls, "MAX_RESTART_CANDIDATES", 4)
    data = np.random.default_rng(2).normal(size=(256, D)).astype(np.float32)
    vq = with_far_codes(make(cls, dead_code_threshold=1.0))
    assert vq.restart_sample_size == 4
    step = tf.function(lambda z: vq(z, training=True))
    restarted = []
    for _ in range(3):
        step(data)
        restarted.append(np.flatnonzero(vq.reseeded.numpy()).tolist())
    assert restarted == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11]]  # code 0 is in use; K = 12
    assert int(vq.num_restarts) == 11 and len(np.unique(vq(data)["indices"].numpy())) >= K - 2


@pytest.mark.parametrize("cls", LAYERS)
def test_kmeans_init_finds_clusters(cls):
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(K, D)).astype(np.float32) * 10
    data = (centres[rng.integers(0, K, 2048)] + 0.01 * rng.normal(size=(2048, D))).astype(np.float32)
    vq = make(cls, kmeans_init=True, kmeans_iterations=20)
    vq(data, training=True)  # the centroids are installed at the end of the first training call
    out = vq(data, training=False)
    baseline = make(cls)(data, training=False)
    # Each codebook vector sits next to a true centre and most centres are covered.
    d = ((vq.codebook.numpy()[:, None] - centres[None]) ** 2).sum(-1)
    assert np.median(d.min(1)) < 1e-2
    assert len(np.unique(d.argmin(1))) >= K - 2
    assert float(out["commitment_loss"]) < 0.05 * float(baseline["commitment_loss"])


@pytest.mark.parametrize("cls", LAYERS)
def test_jit_compile_and_unknown_batch(cls):
    vq = make(cls, dead_code_threshold=1.0, kmeans_init=True)
    f = tf.function(
        lambda z: vq(z, training=True), jit_compile=True, input_signature=[tf.TensorSpec([None, None, D], tf.float32)]
    )
    out = f(tf.random.normal([3, 5, D]))
    assert out["indices"].shape == (3, 5)
    out = f(tf.random.normal([1, 2, D]))
    assert out["quantized"].shape == (1, 2, D)


@pytest.mark.parametrize("cls", LAYERS)
def test_empty_batch(cls):
    vq = make(cls, dead_code_threshold=1.0)
    out = vq(tf.zeros([0, 3, D]), training=True)
    assert out["quantized"].shape == (0, 3, D) and out["indices"].shape == (0, 3)
    assert float(out["commitment_loss"]) == 0.0 and float(out["codebook_loss"]) == 0.0
    assert np.isfinite(vq.codebook.numpy()).all()


@pytest.mark.parametrize("cls", LAYERS)
def test_bad_input(cls):
    vq = cls(K, D)
    with pytest.raises(ValueError, match="embedding_dim=4"):
        vq(tf.zeros([2, D + 1]))
    vq = make(cls)
    with pytest.raises(TypeError, match="float"):
        vq(tf.zeros([2, D], tf.int32))
    f = tf.function(lambda z: vq(z), input_signature=[tf.TensorSpec([None, None], tf.float32)])
    with pytest.raises(tf.errors.InvalidArgumentError, match="embedding_dim=4"):
        f(tf.zeros([2, D + 2]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"codes must be in \[0, 12\)"):
        vq.lookup(tf.constant([0, K]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"found values from\] \[-1\] \[to\] \[2\]"):
        tf.function(vq.lookup)(tf.constant([-1, 2]))
    with pytest.raises(TypeError, match="integers"):
        vq.lookup(tf.constant([0.0]))
    for bad in (dict(num_embeddings=0), dict(embedding_dim=-1), dict(commitment_cost=-1.0)):
        args = {"num_embeddings": K, "embedding_dim": D, **bad}
        with pytest.raises(ValueError, match=next(iter(bad))):
            cls(**args)


@pytest.mark.parametrize("cls", LAYERS)
def test_lookup_matches_codebook(cls):
    vq = make(cls)
    idx = np.array([[0, 5], [11, 3]])
    np.testing.assert_array_equal(vq.lookup(idx).numpy(), vq.codebook.numpy()[idx])


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
@pytest.mark.parametrize("cls", LAYERS)
def test_mixed_precision_dtypes(cls, policy):
    vq = cls(K, D, dtype=policy)
    z = tf.random.normal([4, 3, D])
    out = vq(z, training=True)
    compute = policy.split("_")[1]
    assert out["quantized"].dtype == compute
    assert out["indices"].dtype == tf.int32
    for key in ("codebook_loss", "commitment_loss", "perplexity"):
        assert out[key].dtype == tf.float32
    assert vq.codebook.dtype == tf.float32
    # Distances in float32 on the (rounded) compute-dtype input: same codes as a NumPy argmin.
    z_rounded = tf.cast(tf.cast(z, compute), tf.float32).numpy()
    np.testing.assert_array_equal(vq(z)["indices"].numpy(), np_nearest(z_rounded, vq.codebook.numpy()))


@pytest.mark.parametrize("cls", LAYERS)
def test_keras_round_trip(cls, tmp_path):
    inputs = keras.Input((3, 3, D))
    vq = cls(K, D, dead_code_threshold=0.5, kmeans_init=True, seed=7, name="vq")
    model = keras.Model(inputs, vq(inputs)["quantized"])
    vq(tf.random.normal([64, D]), training=True)  # move the state away from its initial value
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    lvq = loaded.get_layer("vq")
    assert type(lvq) is cls and lvq.get_config() == vq.get_config()
    for a, b in zip(vq.weights, lvq.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    z = tf.random.normal([2, 3, 3, D])
    np.testing.assert_array_equal(model(z).numpy(), loaded(z).numpy())


def test_mirrored_ema_equals_single_replica(mirrored):
    rng = np.random.default_rng(4)
    init = rng.normal(size=(K, D)).astype(np.float32)
    batches = [rng.normal(size=(8, 3, D)).astype(np.float32) for _ in range(3)]

    single = make(VectorQuantizerEMA, decay=0.8)
    single._codebook.assign(init)
    single.ema_dw.assign(init)
    for b in batches:
        single(b, training=True)

    with mirrored.scope():
        multi = make(VectorQuantizerEMA, decay=0.8)
        multi._codebook.assign(init)
        multi.ema_dw.assign(init)

    @tf.function
    def step(x):
        return mirrored.run(lambda v: multi(v, training=True)["indices"], args=(x,))

    for b in batches:
        halves = mirrored.experimental_distribute_values_from_function(
            lambda ctx, b=b: tf.constant(b[ctx.replica_id_in_sync_group * 4 : (ctx.replica_id_in_sync_group + 1) * 4])
        )
        step(halves)
    for want, got in zip(single.weights, multi.weights):
        values = mirrored.experimental_local_results(got.value)
        assert len(values) == 2
        for v in values:  # every replica holds the single-replica result
            np.testing.assert_allclose(v.numpy(), want.numpy(), rtol=1e-5, atol=1e-6, err_msg=got.name)


def test_mirrored_restart_and_kmeans_keep_replicas_identical(mirrored):
    with mirrored.scope():
        vq = make(VectorQuantizerEMA, dead_code_threshold=2.0, kmeans_init=True)

    @tf.function
    def step(x):
        mirrored.run(lambda v: vq(v, training=True), args=(x,))

    for i in range(3):
        x = mirrored.experimental_distribute_values_from_function(
            lambda ctx, i=i: tf.random.stateless_normal([6, D], seed=[i, ctx.replica_id_in_sync_group])
        )
        step(x)
    for var in vq.weights:
        first, second = [v.numpy() for v in mirrored.experimental_local_results(var.value)]
        np.testing.assert_array_equal(first, second, err_msg=var.name)


def test_codebook_usage_metric():
    rng = np.random.default_rng(5)
    metric = CodebookUsage(K)
    all_idx = []
    for _ in range(3):
        idx = rng.integers(0, K // 2, size=(4, 3, 3))
        metric.update_state(idx)
        all_idx.append(idx.ravel())
    counts = np.bincount(np.concatenate(all_idx), minlength=K)
    np.testing.assert_array_equal(metric.counts().numpy(), counts)
    p = counts[counts > 0] / counts.sum()
    result = metric.result()
    np.testing.assert_allclose(result["perplexity"].numpy(), np.exp(-(p * np.log(p)).sum()), rtol=1e-5)
    assert float(result["codebook_usage"]) == pytest.approx((counts > 0).mean())


# ---------------------------------------------------------------- restarts and k-means (issue 11)


def far_codebook(vq):
    """Code 0 at the origin, every other code far away (never nearest to data near 0)."""
    far = np.full((K, D), 100.0, np.float32)
    far[0] = 0.0
    vq._set_codes(tf.ones([K], tf.bool), tf.constant(far), tf.ones([K]))
    return far


@pytest.mark.parametrize("cls", LAYERS)
@pytest.mark.parametrize("rows", [5, 40])
def test_restart_draws_distinct_rows_and_only_as_many_as_there_are(cls, rows):
    data = np.random.default_rng(7).normal(size=(rows, D)).astype(np.float32)
    vq = make(cls, dead_code_threshold=1.0)
    far = far_codebook(vq)
    vq(data, training=True)
    codebook = vq.codebook.numpy()
    restarted = np.flatnonzero(vq.reseeded.numpy())
    # 11 codes are dead: all are restarted when the batch has >= 11 rows, else one per row.
    assert len(restarted) == min(K - 1, rows) == int(vq.num_restarts.numpy())
    np.testing.assert_array_equal(restarted, np.arange(1, len(restarted) + 1))  # lowest-numbered first
    np.testing.assert_allclose(codebook[len(restarted) + 1 :], far[len(restarted) + 1 :], rtol=1e-6)
    # Each restarted code is a row of the batch, and no two are the same row.
    match = [np.flatnonzero(np.all(np.isclose(data, codebook[i], atol=1e-5), axis=1)) for i in restarted]
    assert all(len(m) == 1 for m in match)
    assert len({int(m[0]) for m in match}) == len(restarted)


@pytest.mark.parametrize("cls", LAYERS)
def test_restart_draws_among_distinct_values(cls):
    # 60 rows but 4 distinct values away from the origin (one of them 57 times): the 11 dead codes
    # never take one value twice (copies split its vectors or die again), and a value a restarted
    # code holds is no candidate at the next step: two steps give each value exactly one code.
    values = np.random.default_rng(2).normal(size=(4, D)).astype(np.float32) + 5.0
    data = np.concatenate([np.repeat(values[:1], 57, axis=0), values[1:]])
    data = data[np.random.default_rng(3).permutation(len(data))]
    for seed in range(5):
        vq = make(cls, dead_code_threshold=1.0, seed=seed)
        far_codebook(vq)
        vq(data, training=True)
        first = np.flatnonzero(vq.reseeded.numpy())
        np.testing.assert_array_equal(first, np.arange(1, len(first) + 1))
        vq(data, training=True)
        assert int(vq.num_restarts.numpy()) == 4, seed
        # Codes 1-4 sit on the 4 values, one each (the EMA codebook has moved them a little since).
        codes = vq(values)["indices"].numpy()
        np.testing.assert_array_equal(np.sort(codes), np.arange(1, 5))
        np.testing.assert_allclose(vq.codebook.numpy()[codes], values, atol=0.05)


@pytest.mark.parametrize("cls", LAYERS)
def test_restarts_on_repeated_vectors_leave_no_duplicate_codes(cls):
    # Issue 26's probe: 40 distinct vectors tiled 4 times, 64 codes, no k-means, 8 training calls.
    # Restarts must not put a second code on a value (nor on a value a live code already holds).
    values = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
    vq = cls(64, 8, dead_code_threshold=0.5, kmeans_init=False, seed=3)
    step = tf.function(lambda z: vq(z, training=True))
    for _ in range(8):
        step(np.tile(values, (4, 1)))
    assert int(vq.num_restarts.numpy()) >= 40
    codebook = vq.codebook.numpy()
    gaps = np.sqrt(((codebook[:, None] - codebook[None]) ** 2).sum(-1)) + np.eye(64) * 1e9
    assert gaps.min() > 1e-3, f"{int((gaps.min(1) <= 1e-3).sum())} codes have a twin"
    # Every distinct value has a code of its own (the restarts covered them all).
    np.testing.assert_array_equal(np.unique(vq(values)["indices"].numpy()).size, 40)


@pytest.mark.parametrize("cls", LAYERS)
def test_restart_of_a_code_that_dies_during_the_step(cls):
    # The restart candidates are drawn only when some code may be dead after the step. Code 1 is
    # alive before this step (usage 1.5 >= threshold 1) and dead after it (it wins nothing: 0.75).
    vq = make(cls, dead_code_threshold=1.0, usage_decay=0.5)
    far_codebook(vq)
    vq.num_updates.assign(20)
    usage = np.full(K, 100.0, np.float32)
    usage[1] = 1.5
    vq.code_usage.assign(usage)
    vq(np.random.default_rng(0).normal(size=(30, D)).astype(np.float32) * 0.01, training=True)
    np.testing.assert_array_equal(np.flatnonzero(vq.reseeded.numpy()), [1])
    # ... and no draw is needed when no code can die: the alive codes keep their vectors.
    usage[1] = 2.5
    vq.code_usage.assign(usage)
    vq(np.random.default_rng(1).normal(size=(30, D)).astype(np.float32) * 0.01, training=True)
    assert not vq.reseeded.numpy().any()


def test_restart_draw_is_uniform_over_rows():
    # 2000 draws of 11 codes from a batch of 22 rows: each row should be picked about half the time.
    # (None at the origin, where code 0 sits: a value its code already holds is not a candidate.)
    data = np.repeat(np.arange(1, 23, dtype=np.float32)[:, None] * 0.5, D, axis=1)
    vq = make(VectorQuantizer, dead_code_threshold=1.0)
    picks = np.zeros(22)
    step = tf.function(lambda z: vq(z, training=True))
    for _ in range(300):
        far_codebook(vq)
        vq.restarted_at.assign(-np.ones(K, np.int64))
        vq.code_usage.assign(np.zeros(K, np.float32))
        step(data)
        picks[np.round(vq.codebook.numpy()[1:, 0] / 0.5).astype(int) - 1] += 1
    frequency = picks / 300
    assert np.all(np.abs(frequency - 0.5) < 0.12), frequency


@pytest.mark.parametrize("cls", LAYERS)
def test_restarted_code_has_a_grace_period(cls):
    vq = make(cls, dead_code_threshold=1.0, usage_decay=0.5, restart_grace_steps=3)
    far_codebook(vq)
    step = tf.function(lambda z: vq(z, training=True))
    step(np.random.default_rng(0).normal(size=(30, D)).astype(np.float32) + 20.0)
    assert int(vq.num_restarts.numpy()) == K - 1  # codes 1..11 take rows near 20; code 0 wins nothing
    restarted_at = vq.restarted_at.numpy().copy()
    np.testing.assert_array_equal(restarted_at[1:], 1)
    # Only code 0 (at the origin) wins from now on (rows near it, but not on it: a value a code
    # already holds is no restart candidate).
    zeros = np.random.default_rng(1).normal(size=(30, D)).astype(np.float32) * 0.01
    for expected_step in (2, 3):
        step(zeros)
        # Codes 1..11 won nothing, but are within their grace period: not restarted again.
        np.testing.assert_array_equal(vq.restarted_at.numpy()[1:], 1, err_msg=f"step {expected_step}")
    step(zeros)  # step 4 = 1 + grace: now they may be judged dead again
    np.testing.assert_array_equal(vq.restarted_at.numpy()[1:], 4)


def test_default_grace_period_is_the_usage_time_constant():
    assert make(VectorQuantizer, dead_code_threshold=1.0).grace_steps == 100
    assert make(VectorQuantizer, dead_code_threshold=1.0, usage_decay=0.9).grace_steps == 10
    assert make(VectorQuantizer, dead_code_threshold=1.0, usage_decay=0.0).grace_steps == 1
    with pytest.raises(ValueError, match="restart_grace_steps"):
        make(VectorQuantizer, restart_grace_steps=0)


def test_kmeans_install_initialises_the_ema_statistics():
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(K, D)).astype(np.float32) * 10
    data = (centres[rng.integers(0, K, 96)] + 0.01 * rng.normal(size=(96, D))).astype(np.float32)
    vq = make(VectorQuantizerEMA, kmeans_init=True, kmeans_iterations=20, decay=0.99)
    assert vq.kmeans_sample_size >= len(data)  # k-means sees the whole batch
    vq(data, training=True)
    codebook = vq.codebook.numpy()
    # (The layer's assignment, checked against NumPy above: some rows here are float32 ties.)
    sizes = np.bincount(vq(data)["indices"].numpy(), minlength=K).astype(np.float32)
    np.testing.assert_allclose(vq.ema_cluster_size.numpy(), sizes, atol=1e-3)
    np.testing.assert_allclose(vq.code_usage.numpy(), 0.01 * sizes, rtol=1e-5, atol=1e-6)
    smoothed = (sizes + 1e-5) / (sizes.sum() + K * 1e-5) * sizes.sum()
    np.testing.assert_allclose(vq.ema_dw.numpy(), codebook * smoothed[:, None], rtol=1e-4, atol=1e-4)
    # The next step (a batch shifted by 1) moves each centroid by about (1 - decay) of the shift,
    # as for a code that has seen many batches, not halfway toward one batch.
    vq(data + 1.0, training=True)
    # (Seeding every code at N = 1 instead moves a code of 8 rows by about 0.07.)
    moved = vq.codebook.numpy() - codebook
    assert np.abs(moved).max() < 0.03
    assert np.mean(moved[sizes > 0]) == pytest.approx(0.01, abs=2e-3)


def test_training_perplexity_is_of_the_global_batch(mirrored):
    with mirrored.scope():
        vq = make(VectorQuantizerEMA, decay=0.5)
    codebook = np.eye(K, D, dtype=np.float32) * 10
    vq._codebook.assign(codebook)
    vq.ema_dw.assign(codebook)

    @tf.function
    def step(x):
        return mirrored.run(lambda v: vq(v, training=True)["perplexity"], args=(x,))

    # Replica 0 sees only code 0, replica 1 only code 1: each local batch has perplexity 1, the
    # global batch 2.
    x = mirrored.experimental_distribute_values_from_function(
        lambda ctx: tf.tile(tf.constant(codebook)[ctx.replica_id_in_sync_group][None], [4, 1])
    )
    for value in mirrored.experimental_local_results(step(x)):
        assert float(value) == pytest.approx(2.0, rel=1e-5)


def mirrored_split(mirrored, batch, sizes):
    """A distributed value whose replica i holds rows [sum(sizes[:i]), sum(sizes[:i+1])) of batch."""
    bounds = np.cumsum([0, *sizes])
    return mirrored.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(batch[bounds[ctx.replica_id_in_sync_group] : bounds[ctx.replica_id_in_sync_group + 1]])
    )


@pytest.mark.parametrize("cls", LAYERS)
@pytest.mark.parametrize("sizes", [(4, 4), (6, 2), (0, 8), (8, 0)])
def test_mirrored_default_configuration_equals_single_replica(mirrored, cls, sizes):
    """k-means init + dead-code restart (+ EMA statistics), with even, uneven and empty replica
    batches: every replica ends with the state one replica reaches on the whole batch."""
    rng = np.random.default_rng(11)
    batches = [rng.normal(size=(8, D)).astype(np.float32) + 3.0 * i for i in range(4)]
    # Two batches repeat their values across the split (rows 4-7 are rows 0-3 in another order):
    # replicas draw the same value, and the global draw must keep it once.
    for i in (1, 3):
        batches[i][4:] = batches[i][[2, 0, 3, 1]]
    kwargs = dict(dead_code_threshold=2.0, kmeans_init=True, usage_decay=0.5, restart_grace_steps=2)
    single = make(cls, **kwargs)
    for b in batches:
        single(b, training=True)
    with mirrored.scope():
        multi = make(cls, **kwargs)

    @tf.function
    def step(x):
        mirrored.run(lambda v: multi(v, training=True), args=(x,))

    for b in batches:
        step(mirrored_split(mirrored, b, sizes))
    assert int(single.num_restarts.numpy()) > 0
    for want, got in zip(single.weights, multi.weights):
        for value in mirrored.experimental_local_results(got.value):
            np.testing.assert_allclose(value.numpy(), want.numpy(), rtol=1e-5, atol=1e-5, err_msg=got.name)
