"""SimVQ and IBQ (issue #41): NumPy references of the forward pass and the losses, their gradients
(SimVQ: W and b move, the basis C does not; IBQ: the reference's dense formulation, and every code
row gets a gradient in one step while plain VQ's unused rows get none), the blocked code search and
IBQ's blocked gradient at K = 16,384 equal to the whole-matrix ones, a TFLite file of the blocked
search, round trips, tf.distribute equal to one replica, and bad arguments."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from vqvae_tf import IndexBackpropQuantizer, SimVQQuantizer, VectorQuantizer
from vqvae_tf.layers.quantizers import ibq as ibq_module
from vqvae_tf.layers.quantizers import ops
from vqvae_tf.utils.distribute import replica_scaled

K, D = 12, 4


def np_perplexity(idx, k):
    p = np.bincount(idx.ravel(), minlength=k) / idx.size
    p = p[p > 0]
    return np.exp(-(p * np.log(p)).sum())


def make_simvq(seed=0, **kwargs):
    layer = SimVQQuantizer(K, D, **kwargs)
    layer.build((None, D))
    rng = np.random.default_rng(seed)
    layer.basis.assign(rng.normal(size=(K, D)).astype(np.float32))
    layer.projection.assign(rng.normal(size=(D, D)).astype(np.float32))
    layer.projection_bias.assign(rng.normal(size=(D,)).astype(np.float32))
    return layer


def make_ibq(seed=0, k=K, **kwargs):
    layer = IndexBackpropQuantizer(k, D, **kwargs)
    layer.build((None, D))
    layer.codebook_variable.assign(np.random.default_rng(seed).normal(size=(k, D)).astype(np.float32))
    return layer


# ------------------------------------------------------------------------------------ SimVQ


@pytest.mark.parametrize("training", [False, True])
def test_simvq_matches_numpy(training):
    layer = make_simvq(commitment_cost=0.3)
    z = np.random.default_rng(1).normal(size=(2, 3, 5, D)).astype(np.float32) * 2
    out = layer(z, training=training)
    codebook = layer.basis.numpy().astype(np.float64) @ layer.projection.numpy() + layer.projection_bias.numpy()
    flat = z.reshape(-1, D).astype(np.float64)
    idx = ((flat[:, None] - codebook[None]) ** 2).sum(-1).argmin(1)
    np.testing.assert_array_equal(out["indices"].numpy().ravel(), idx)
    np.testing.assert_allclose(out["quantized"].numpy().reshape(-1, D), codebook[idx], rtol=1e-5, atol=1e-5)
    mse = ((flat - codebook[idx]) ** 2).mean()
    np.testing.assert_allclose(float(out["commitment_loss"]), 0.3 * mse, rtol=1e-5)
    np.testing.assert_allclose(float(out["codebook_loss"]), mse, rtol=1e-5)
    np.testing.assert_allclose(float(out["perplexity"]), np_perplexity(idx, K), rtol=1e-5)
    np.testing.assert_allclose(layer.codebook.numpy(), codebook, rtol=1e-5, atol=1e-5)


def test_simvq_gradients_move_the_map_not_the_basis():
    layer = make_simvq(commitment_cost=0.3)
    z = tf.Variable(np.random.default_rng(2).normal(size=(9, D)).astype(np.float32))
    upstream = tf.constant(np.random.default_rng(3).normal(size=(9, D)).astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        out = layer(z, training=True)
        decoder_loss = tf.reduce_sum(out["quantized"] * upstream)
    # The decoder's gradient: the identity to z, nothing to the map.
    np.testing.assert_allclose(tape.gradient(decoder_loss, z).numpy(), upstream.numpy())
    assert all(g is None for g in tape.gradient(decoder_loss, [layer.projection, layer.projection_bias]))
    # The codebook loss trains W and b: d/dq of mean((sg z - q)^2) = 2 (q - z) / (N D), q = C[idx] W + b.
    c, w, b = layer.basis.numpy(), layer.projection.numpy(), layer.projection_bias.numpy()
    idx = out["indices"].numpy()
    dq = 2 * (c[idx] @ w + b - z.numpy()) / z.numpy().size
    dw, db = tape.gradient(out["codebook_loss"], [layer.projection, layer.projection_bias])
    np.testing.assert_allclose(dw.numpy(), c[idx].T @ dq, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(db.numpy(), dq.sum(0), rtol=1e-4, atol=1e-6)
    assert tape.gradient(out["commitment_loss"], layer.projection) is None
    assert tape.gradient(out["codebook_loss"], z) is None
    np.testing.assert_allclose(tape.gradient(out["commitment_loss"], z).numpy(), 0.3 * -dq, rtol=1e-4, atol=1e-6)
    # One optimizer step: C is not trained; every code moves, used or not.
    assert [v.path for v in layer.trainable_weights] == [layer.projection.path, layer.projection_bias.path]
    basis, before = layer.basis.numpy().copy(), layer.codebook.numpy()
    optimizer = keras.optimizers.Adam(0.01)
    with tf.GradientTape() as tape:
        loss = sum(v for k, v in layer(z, training=True).items() if k.endswith("_loss"))
    optimizer.apply_gradients(zip(tape.gradient(loss, layer.trainable_weights), layer.trainable_weights))
    np.testing.assert_array_equal(layer.basis.numpy(), basis)
    assert len(set(idx.tolist())) < K and (np.abs(layer.codebook.numpy() - before).max(axis=1) > 1e-4).all()


# -------------------------------------------------------------------------------------- IBQ


@pytest.mark.parametrize("training", [False, True])
def test_ibq_matches_numpy(training):
    layer = make_ibq(commitment_cost=0.3)
    z = np.random.default_rng(4).normal(size=(2, 3, 5, D)).astype(np.float32)
    out = layer(z, training=training)
    e = layer.codebook_variable.numpy().astype(np.float64)
    flat = z.reshape(-1, D).astype(np.float64)
    idx = (flat @ e.T).argmax(1)  # the largest logit, not the nearest code
    assert (idx != ((flat[:, None] - e[None]) ** 2).sum(-1).argmin(1)).any()
    np.testing.assert_array_equal(out["indices"].numpy().ravel(), idx)
    np.testing.assert_allclose(out["quantized"].numpy().reshape(-1, D), e[idx], rtol=1e-6)
    mse = ((flat - e[idx]) ** 2).mean()
    np.testing.assert_allclose(float(out["commitment_loss"]), 0.3 * mse, rtol=1e-5)
    np.testing.assert_allclose(float(out["codebook_loss"]), 2 * mse, rtol=1e-5)  # + the double quantization loss
    np.testing.assert_allclose(float(out["perplexity"]), np_perplexity(idx, K), rtol=1e-5)


def reference_ibq(z, e, beta):
    """The reference's dense formulation (SEED-Voken's IndexPropagationQuantize, our beta placement),
    differentiated by TF: (z_q, codebook loss + double quantization loss, commitment loss)."""
    logits = tf.matmul(z, e, transpose_b=True)
    soft = tf.nn.softmax(logits)
    hard = tf.one_hot(tf.argmax(logits, axis=1), e.shape[0], dtype=z.dtype)
    z_q = tf.matmul(hard - tf.stop_gradient(soft) + soft, e)
    z_q2 = tf.matmul(hard, e)
    double = tf.reduce_mean(tf.square(z_q - z))
    codebook = tf.reduce_mean(tf.square(z_q2 - tf.stop_gradient(z)))
    return z_q, codebook + double, beta * tf.reduce_mean(tf.square(tf.stop_gradient(z_q2) - z))


def ibq_gradients(layer, z, upstream):
    """d/dz and d/dE of sum(quantized * upstream) + the layer's losses, one training call."""
    z = tf.Variable(z)
    with tf.GradientTape() as tape:
        out = layer(z, training=True)
        loss = tf.reduce_sum(out["quantized"] * upstream) + out["codebook_loss"] + out["commitment_loss"]
    return [g.numpy() for g in tape.gradient(loss, [z, layer.codebook_variable])]


def test_ibq_gradient_is_the_references():
    layer = make_ibq(commitment_cost=0.3)
    rng = np.random.default_rng(5)
    z = rng.normal(size=(10, D)).astype(np.float32)
    upstream = rng.normal(size=(10, D)).astype(np.float32)
    dz, de = ibq_gradients(layer, z, upstream)
    z64, e64 = tf.Variable(z.astype(np.float64)), tf.Variable(layer.codebook_variable.numpy().astype(np.float64))
    with tf.GradientTape() as tape:
        z_q, codebook_loss, commitment = reference_ibq(z64, e64, 0.3)
        loss = tf.reduce_sum(z_q * upstream.astype(np.float64)) + codebook_loss + commitment
    want_dz, want_de = tape.gradient(loss, [z64, e64])
    np.testing.assert_allclose(dz, want_dz.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(de, want_de.numpy(), rtol=1e-4, atol=1e-6)


def test_every_ibq_code_gets_a_gradient_unlike_plain_vq():
    k = 64
    z = np.random.default_rng(6).normal(size=(8, D)).astype(np.float32)  # 8 rows: most codes unused
    upstream = np.random.default_rng(7).normal(size=(8, D)).astype(np.float32)
    ibq = make_ibq(k=k)
    _, de = ibq_gradients(ibq, z, upstream)
    assert (np.abs(de).sum(1) > 0).all()
    vq = VectorQuantizer(k, D, kmeans_init=False, dead_code_threshold=0.0)
    vq.build((None, D))
    vq._codebook.assign(ibq.codebook_variable)
    with tf.GradientTape() as tape:
        out = vq(z, training=True)
        loss = tf.reduce_sum(out["quantized"] * upstream) + out["codebook_loss"] + out["commitment_loss"]
    grad = tf.convert_to_tensor(tape.gradient(loss, vq._codebook)).numpy()
    used = np.zeros(k, bool)
    used[out["indices"].numpy()] = True
    assert used.sum() <= 8 and (np.abs(grad[~used]).sum(1) == 0).all() and (np.abs(grad[used]).sum(1) > 0).all()


# ----------------------------------------------------------------- K = 16,384, in blocks


def test_blocked_search_and_gradient_equal_the_whole_matrix(monkeypatch):
    k = ops.BLOCKED_FROM_K
    rng = np.random.default_rng(8)
    codebook = rng.normal(size=(k, D)).astype(np.float32)
    z = rng.normal(size=(23, D)).astype(np.float32)
    upstream = rng.normal(size=(23, D)).astype(np.float32)
    flat, e = z.astype(np.float64), codebook.astype(np.float64)
    monkeypatch.setattr(ops, "BLOCK_ELEMENTS", 5 * k)  # 5 rows a block: 5 blocks, the last padded
    assert ops.block_rows(k) == 5
    nearest = ops.best_rows(tf.constant(z), tf.constant(codebook), "distance").numpy()
    np.testing.assert_array_equal(nearest, ((flat[:, None] - e[None]) ** 2).sum(-1).argmin(1))
    # k-means' padded sample: the blocks wholly past the first 7 rows (rows 10-22) are skipped.
    partial = ops.best_rows(tf.constant(z), tf.constant(codebook), "distance", num_valid=tf.constant(7)).numpy()
    np.testing.assert_array_equal(partial[:10], nearest[:10])
    assert (partial[10:] == 0).all() and (nearest[10:] != 0).all()
    np.testing.assert_array_equal(
        ops.best_rows(tf.constant(z), tf.constant(codebook), "dot").numpy(), (flat @ e.T).argmax(1)
    )
    blocked = make_ibq(k=k)
    blocked.codebook_variable.assign(codebook)
    got = ibq_gradients(blocked, z, upstream)
    monkeypatch.setattr(ibq_module, "BLOCKED_FROM_K", 1 << 30)  # the gradient in one [N, K] matrix
    whole = ibq_gradients(blocked, z, upstream)
    for a, b in zip(got, whole):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_lfq_entropy_at_14_bits_in_blocks_is_the_whole_matrix(monkeypatch):
    """LFQ's batch entropy over 2^14 codes, summed in blocks of rows with its custom gradient: its
    value and gradient against the one-matrix autodiff path (float64 NumPy for the value)."""
    from vqvae_tf import LookupFreeQuantizer
    from vqvae_tf.layers.quantizers import lfq

    monkeypatch.setattr(ops, "BLOCK_ELEMENTS", 7 * ops.BLOCKED_FROM_K)  # 7 rows a block, the last padded
    z = tf.Variable(np.random.default_rng(13).normal(size=(3, 5, 14)).astype(np.float32) * 0.02)
    layer = LookupFreeQuantizer(14, entropy_temperature=1.0)

    def penalty_and_gradient():
        with tf.GradientTape() as tape:
            penalty = layer(z, training=True)["entropy_loss"]
        return float(penalty), tape.gradient(penalty, z).numpy()

    got = penalty_and_gradient()
    monkeypatch.setattr(lfq, "BLOCKED_FROM_K", 1 << 30)  # one [N, K] matrix, TF's own gradient
    want = penalty_and_gradient()
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-4, atol=1e-7)
    assert np.abs(want[1]).max() > 1e-4
    # The value against float64 NumPy: the entropy of the batch's mean code distribution.
    a = 4.0 * z.numpy().reshape(-1, 14).astype(np.float64)
    bits = (np.arange(2**14)[:, None] >> np.arange(14)) & 1
    log_q = np.log(1 / (1 + np.exp(-a))) @ bits.T + np.log(1 / (1 + np.exp(a))) @ (1 - bits).T
    mean = np.exp(log_q).mean(0)
    p = 1 / (1 + np.exp(-a))
    sample = -(p * np.log(p) + (1 - p) * np.log(1 - p)).sum(1).mean()
    np.testing.assert_allclose(got[0], 0.1 * (sample + (mean * np.log(mean)).sum()), rtol=1e-4)


@pytest.mark.parametrize("jit", [False, True])
def test_ibq_blocked_training_call_under_tf_function(jit, monkeypatch):
    """IBQ's blocked forward and custom gradient traced with an unknown batch, and compiled by XLA:
    the same codes and gradients as eagerly."""
    monkeypatch.setattr(ops, "BLOCK_ELEMENTS", 5 * ops.BLOCKED_FROM_K)
    layer = make_ibq(k=ops.BLOCKED_FROM_K)
    rng = np.random.default_rng(14)
    z, upstream = rng.normal(size=(2, 3, 4, D)).astype(np.float32), rng.normal(size=(2, 3, 4, D)).astype(np.float32)

    def step(z, upstream):
        with tf.GradientTape() as tape:
            tape.watch(z)
            out = layer(z, training=True)
            loss = tf.reduce_sum(out["quantized"] * upstream) + out["codebook_loss"] + out["commitment_loss"]
        return (out["indices"], *tape.gradient(loss, [z, layer.codebook_variable]))

    spec = tf.TensorSpec([None, 3, 4, D], tf.float32)
    traced = tf.function(step, jit_compile=jit, input_signature=[spec, spec])
    for got, want in zip(traced(z, upstream), step(tf.constant(z), tf.constant(upstream))):
        np.testing.assert_allclose(
            tf.convert_to_tensor(got).numpy(), tf.convert_to_tensor(want).numpy(), rtol=1e-4, atol=1e-5
        )


def test_blocked_search_converts_to_a_builtin_tflite_file(tmp_path):
    from vqvae_tf.serving import tflite

    k = ops.BLOCKED_FROM_K
    codebook = tf.constant(np.random.default_rng(9).normal(size=(k, D)).astype(np.float32))
    module = tf.Module()
    module.f = tf.function(
        lambda z: {"codes": ops.best_rows(z, codebook)}, input_signature=[tf.TensorSpec([None, D], tf.float32)]
    )
    tf.saved_model.save(module, str(tmp_path), signatures={"search": module.f})
    data = tflite.convert(str(tmp_path), "search", "float32")
    assert not [op for op in tflite.op_names(data) if op.startswith("Flex") or op == "CUSTOM"]
    z = np.random.default_rng(10).normal(size=(1500, D)).astype(np.float32)  # 2 blocks of 1024 rows
    got = tflite.run_signature(data, "search", z=z)["codes"]
    np.testing.assert_array_equal(got, ops.best_rows(tf.constant(z), codebook).numpy())


# --------------------------------------------------------------------------------- contract


@pytest.mark.parametrize("make", [make_simvq, make_ibq])
def test_round_trips_and_codes_out_of_range(make, tmp_path):
    layer = make()
    z = tf.random.stateless_normal([2, 4, 4, D], seed=[1, 2])
    out = layer(z)
    np.testing.assert_array_equal(layer.indices_of(z).numpy(), out["indices"].numpy())
    np.testing.assert_allclose(layer.lookup(out["indices"]).numpy(), out["quantized"].numpy(), rtol=1e-6)
    codebook = layer.codebook.numpy()
    np.testing.assert_allclose(layer.lookup(tf.range(K), codebook=tf.constant(codebook)).numpy(), codebook)
    if make is make_simvq:  # (IBQ's argmax of z . e need not pick e itself: a longer code can win)
        np.testing.assert_array_equal(layer.indices_of(codebook).numpy(), np.arange(K))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"codes must be in \[0, 12\)"):
        layer.lookup(tf.constant([K]))
    model = keras.Sequential([keras.Input((4, 4, D)), layer])
    path = str(tmp_path / "q.keras")
    model.save(path)
    restored = keras.models.load_model(path, safe_mode=False).layers[-1]
    assert type(restored) is type(layer) and restored.get_config() == layer.get_config()
    np.testing.assert_array_equal(layer(z)["indices"].numpy(), restored(z)["indices"].numpy())


@pytest.mark.parametrize("cls", [SimVQQuantizer, IndexBackpropQuantizer])
def test_mixed_precision_and_bad_arguments(cls):
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        layer = cls(K, D)
        x = tf.cast(tf.random.stateless_normal([2, 3, 3, D], seed=[3, 4]), tf.bfloat16)
        out = layer(x, training=True)
        assert out["quantized"].dtype == tf.bfloat16 and out["codebook_loss"].dtype == tf.float32
        np.testing.assert_array_equal(out["indices"].numpy(), layer.indices_of(tf.cast(x, tf.float32)).numpy())
    finally:
        keras.config.set_dtype_policy("float32")
    with pytest.raises(ValueError, match="commitment_cost must be >= 0"):
        cls(K, D, commitment_cost=-1.0)
    with pytest.raises(ValueError, match="embedding_dim=4"):
        cls(K, D)(tf.zeros([2, 3]))


@pytest.mark.parametrize("make", [make_simvq, make_ibq])
def test_mirrored_equals_one_replica(make, mirrored):
    z = np.random.default_rng(11).normal(size=(8, D)).astype(np.float32)
    upstream = np.random.default_rng(12).normal(size=(8, D)).astype(np.float32)

    def loss_of(layer, x, u):
        out = layer(x, training=True)
        loss = tf.reduce_mean(out["quantized"] * u) + out["codebook_loss"] + out["commitment_loss"]
        return loss, out["perplexity"]

    single = make()
    with tf.GradientTape() as tape:
        loss, perplexity = loss_of(single, z, upstream)
    want = tape.gradient(loss, single.trainable_weights)
    with mirrored.scope():
        multi = make()

    @tf.function
    def step(x, u):
        def replica(x, u):
            with tf.GradientTape() as tape:
                loss, perplexity = loss_of(multi, x, u)
                scaled = replica_scaled(loss)
            return tape.gradient(scaled, multi.trainable_weights), perplexity

        grads, perplexities = mirrored.run(replica, args=(x, u))
        return [mirrored.reduce("SUM", g, axis=None) for g in grads], perplexities

    def split(a):
        return mirrored.experimental_distribute_values_from_function(
            lambda ctx: tf.constant(a[ctx.replica_id_in_sync_group * 4 : (ctx.replica_id_in_sync_group + 1) * 4])
        )

    grads, perplexities = step(split(z), split(upstream))
    for g, w in zip(grads, want):
        np.testing.assert_allclose(
            tf.convert_to_tensor(g).numpy(), tf.convert_to_tensor(w).numpy(), rtol=1e-5, atol=1e-7
        )
    for p in mirrored.experimental_local_results(perplexities):  # of the global batch
        np.testing.assert_allclose(float(p), float(perplexity), rtol=1e-5)
