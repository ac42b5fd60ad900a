"""The VQGAN objective (L1, LPIPS, PatchGAN with the adaptive weight): its numbers, distribution,
checkpoints and exact resume, divergence, and what it keeps out of the model."""

import dataclasses
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import fake_mnist_dir

from vqvae_tf import get_config
from vqvae_tf.data import DataSource
from vqvae_tf.losses import objective as objective_lib
from vqvae_tf.models.autoencoders.vqvae import VQVAE
from vqvae_tf.training import loop, train_vqvae_lib
from vqvae_tf.training.options import RunOptions
from vqvae_tf.utils import files

GAN = dict(reconstruction_loss="l1", perceptual_weight=1.0, perceptual_net="alex", adversarial_weight=0.8)


def gan_config(**overrides):
    config = get_config("tiny")
    config.image_shape = (32, 32, 1)  # AlexNet's LPIPS needs 31 px
    for k, v in {**GAN, "disc_filters": 8, "disc_layers": 2, **overrides}.items():
        setattr(config, k, v)
    return config.validate()


def gan_model(config, strategy=None):
    keras.utils.set_random_seed(0)
    with (strategy or tf.distribute.get_strategy()).scope():
        return train_vqvae_lib.build_vqvae(config, 0.1, 0, for_training=True)


def test_adaptive_weight_and_losses_match_a_hand_computation():
    """One step's logged losses against the formulas recomputed by hand on the same weights:
    L1 on [-1, 1], LPIPS, the hinge losses, and VQGAN eq. 7 at the decoder's last kernel."""
    config = gan_config(quantizer="vq", kmeans_init=False, dead_code_threshold=0.0)
    model = gan_model(config)
    obj = model.objective
    x = tf.random.stateless_uniform([4, 32, 32, 1], seed=[1, 2])
    kernel = model.last_layer_kernel()
    with tf.GradientTape(persistent=True) as tape:
        mean = model.forward(x, training=True)["mean"]
        l1 = 2.0 * tf.reduce_mean(tf.abs(mean - x))
        perceptual = tf.reduce_mean(obj.lpips(x, mean))
        nll = l1 + perceptual
        g_loss = -tf.reduce_mean(obj.discriminator(mean))
    ratio = tf.norm(tape.gradient(nll, kernel)) / (tf.norm(tape.gradient(g_loss, kernel)) + 1e-4)
    logits_real, logits_fake = obj.discriminator(x), obj.discriminator(mean)
    hinge = 0.5 * (tf.reduce_mean(tf.nn.relu(1 - logits_real)) + tf.reduce_mean(tf.nn.relu(1 + logits_fake)))
    disc_before = [v.numpy() for v in obj.discriminator.trainable_variables]
    logs = model.train_step(x)
    np.testing.assert_allclose(float(logs["reconstruction_loss"]), float(l1), rtol=1e-5)
    np.testing.assert_allclose(float(logs["perceptual_loss"]), float(perceptual), rtol=1e-5)
    np.testing.assert_allclose(float(logs["generator_loss"]), float(g_loss), rtol=1e-5)
    np.testing.assert_allclose(float(logs["adaptive_weight"]), 0.8 * float(ratio), rtol=1e-4)
    np.testing.assert_allclose(float(logs["discriminator_loss"]), float(hinge), rtol=1e-5)
    assert float(logs["adaptive_weight"]) > 0
    # The discriminator learned (disc_start=0), through its own optimizer.
    assert any(np.abs(a - v.numpy()).max() > 0 for a, v in zip(disc_before, obj.discriminator.trainable_variables))
    assert int(obj.discriminator_optimizer.iterations.numpy()) == 1


def test_the_autoencoders_gradient_holds_the_adversarial_term():
    """The step's gradient with the discriminator acting minus the gradient before `disc_start`
    (same weights, same batch) is the adversarial term alone, lambda * d(-mean D(x_hat))/d theta,
    recomputed by hand: zeroing the generator's term in the objective fails this."""
    config = gan_config(quantizer="vq", kmeans_init=False, dead_code_threshold=0.0)
    model = gan_model(config)
    obj = model.objective
    x = tf.random.stateless_uniform([4, 32, 32, 1], seed=[3, 9])
    variables = model.trainable_variables
    captured = []
    model.optimizer.apply_gradients = lambda pairs: captured.append([g for g, _ in pairs])  # record, do not apply
    disc = [v.numpy() for v in obj.discriminator.weights]
    grads, weights = {}, {}
    for start in (10**9, 0):
        obj.disc_start = start
        logs = model.train_step(x)
        grads[start], weights[start] = captured[-1], float(logs["adaptive_weight"])
        for v, value in zip(obj.discriminator.weights, disc):
            v.assign(value)
    with tf.GradientTape() as tape:
        g_loss = -tf.reduce_mean(obj.discriminator(model.forward(x, training=True)["mean"], training=True))
    by_hand = tape.gradient(g_loss, variables)
    assert weights[0] > 0
    dense = lambda g, v: np.zeros(v.shape, np.float32) if g is None else tf.convert_to_tensor(g).numpy()  # noqa: E731
    moved = 0
    for v, with_gan, without, hand in zip(variables, grads[0], grads[10**9], by_hand, strict=True):
        difference = dense(with_gan, v) - dense(without, v)
        want = weights[0] * dense(hand, v)
        np.testing.assert_allclose(
            difference, want, rtol=1e-3, atol=1e-5 * max(np.abs(want).max(), 1e-3), err_msg=v.path
        )
        moved += np.abs(want).max() > 0
    assert moved >= len(variables) // 2  # the term reaches the decoder and the encoder


def test_before_disc_start_the_discriminator_neither_acts_nor_learns():
    config = gan_config(disc_start=5)
    model = gan_model(config)
    plain = gan_model(gan_config(disc_start=5, adversarial_weight=0.0))
    for a, b in zip(plain.weights, model.weights, strict=True):
        a.assign(b)
    disc_before = [v.numpy() for v in model.objective.discriminator.weights]
    x = tf.random.stateless_uniform([4, 32, 32, 1], seed=[3, 4])
    logs = model.train_step(x)
    plain.train_step(x)
    assert float(logs["discriminator_loss"]) == 0.0
    for a, v in zip(disc_before, model.objective.discriminator.weights):
        np.testing.assert_array_equal(a, v.numpy())
    # The generator's step is the one without an adversarial term.
    for a, b in zip(plain.trainable_weights, model.trainable_weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6, err_msg=a.path)


def test_before_perceptual_start_lpips_neither_acts_nor_costs():
    """Until `perceptual_start` steps the step is the L1 one (LPIPS logged as 0, the same weights as
    a model without it); from then on LPIPS enters, with the value recomputed by hand."""
    no_gan = dict(adversarial_weight=0.0, quantizer="vq", kmeans_init=False, dead_code_threshold=0.0)
    model = gan_model(gan_config(perceptual_start=2, **no_gan))
    plain = gan_model(gan_config(perceptual_weight=0.0, **no_gan))
    for a, b in zip(plain.weights, model.weights, strict=True):
        a.assign(b)
    step, plain_step = tf.function(model.train_step), tf.function(plain.train_step)
    for i in range(2):
        x = tf.random.stateless_uniform([4, 32, 32, 1], seed=[8, i])
        assert float(step(x)["perceptual_loss"]) == 0.0
        plain_step(x)
    for a, b in zip(plain.trainable_weights, model.trainable_weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6, err_msg=a.path)
    x = tf.random.stateless_uniform([4, 32, 32, 1], seed=[8, 2])
    expected = tf.reduce_mean(model.objective.lpips(x, model.forward(x, training=True)["mean"]))
    model.objective.trackers["perceptual_loss"].reset_state()  # (the logs are running means)
    np.testing.assert_allclose(float(step(x)["perceptual_loss"]), float(expected), rtol=1e-5)
    assert float(expected) > 0


def test_mirrored_gan_step_equals_one_replica(mirrored):
    """Two replicas reach one replica's weights: autoencoder, discriminator and both optimizers
    (the adaptive weight's gradient norms are taken on the global batch)."""
    config = gan_config()
    batches = [tf.random.stateless_uniform([8, 32, 32, 1], seed=[7, i]) for i in range(2)]
    single = gan_model(config)
    step = tf.function(single.train_step)
    weights = []
    for b in batches:
        weights.append(float(step(b)["adaptive_weight"]))
    multi = gan_model(config, mirrored)

    @tf.function
    def multi_step(x):
        return mirrored.run(multi.train_step, args=(x,))

    for b in batches:
        halves = mirrored.experimental_distribute_values_from_function(
            lambda ctx, b=b: b[ctx.replica_id_in_sync_group * 4 : (ctx.replica_id_in_sync_group + 1) * 4]
        )
        multi_step(halves)

    def state(m):
        o = m.objective
        return m.weights + m.optimizer.variables + o.discriminator.weights + o.discriminator_optimizer.variables

    for want, got in zip(state(single), state(multi), strict=True):
        for value in mirrored.experimental_local_results(got.value):
            np.testing.assert_allclose(value.numpy(), want.numpy(), rtol=1e-4, atol=1e-5, err_msg=got.path)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("idx"))
    fake_mnist_dir(root, n_train=48, n_test=8)
    return root


def _run(workdir, data_dir, steps, **overrides):
    config = gan_config(**overrides)
    config.steps, config.batch_size = steps, 8
    options = RunOptions(
        workdir=str(workdir), data=DataSource(None, data_dir, image_size=32), log_every=3, checkpoint_every=3
    )
    return train_vqvae_lib.train_and_evaluate(config, options)


def _checkpoint_values(workdir):
    path = tf.train.latest_checkpoint(os.path.join(str(workdir), "vqvae", "checkpoints"))
    reader = tf.train.load_checkpoint(path)
    values = {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map() if "save_counter" not in k}
    return {k: v for k, v in values.items() if np.asarray(v).dtype.kind in "fiub"}  # not the object graph


class _Killed(BaseException):
    pass


def test_gan_run_resumed_reaches_the_uninterrupted_weights(tmp_path, data_dir, monkeypatch):
    """A run killed right after its step-3 checkpoint and resumed equals one that ran its 6 steps
    straight: every checkpointed value (autoencoder, discriminator, both optimizers), over batches
    that cross an epoch (48 images, batch 8)."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    _run(straight, data_dir, 6, disc_start=2)
    save = loop.checkpoints.save

    def save_then_die(manager, step):
        path = save(manager, step)
        if step == 3:
            raise _Killed()
        return path

    monkeypatch.setattr(loop.checkpoints, "save", save_then_die)
    with pytest.raises(_Killed):
        _run(resumed, data_dir, 6, disc_start=2)
    monkeypatch.setattr(loop.checkpoints, "save", save)
    metrics = _run(resumed, data_dir, 6, disc_start=2)
    a, b = _checkpoint_values(straight), _checkpoint_values(resumed)
    assert a.keys() == b.keys()
    assert any(k.startswith("discriminator/") for k in a) and any(k.startswith("discriminator_optimizer/") for k in a)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key)
    assert {"test_ssim", "test_lpips"} <= metrics.keys()
    # Nothing of the objective is in the trained model: its weights are a plain model's.
    model = train_vqvae_lib.load_trained_model(str(resumed))
    assert model.objective is None
    assert not [w.path for w in model.weights if "discriminator" in w.path or "lpips" in w.path]
    assert len(model.weights) == len(get_config("tiny").validate().build().weights)
    # Another discriminator cannot resume this run.
    with pytest.raises(
        files.WorkdirError, match="discriminator: saved '2 layers, 8 filters' vs now '3 layers, 8 filters'"
    ):
        _run(resumed, data_dir, 9, disc_start=2, disc_layers=3)


def test_a_non_finite_loss_stops_the_run_naming_the_step(tmp_path, data_dir, monkeypatch):
    original = VQVAE.losses_of

    def poisoned(self, images, out):
        losses = original(self, images, out)
        bad = tf.where(self.optimizer.iterations >= 4, np.float32(np.nan), np.float32(0.0))
        return dict(losses, codebook_loss=losses["codebook_loss"] + bad, loss=losses["loss"] + bad)

    monkeypatch.setattr(VQVAE, "losses_of", poisoned)
    with pytest.raises(loop.TrainingDiverged, match=r"diverged at step 5: loss, codebook_loss.*ckpt-3"):
        _run(tmp_path, data_dir, 9)
    checkpoints = sorted(os.listdir(tmp_path / "vqvae" / "checkpoints"))
    assert "ckpt-3.index" in checkpoints and not [c for c in checkpoints if c.startswith("ckpt-6")]
    values = _checkpoint_values(tmp_path)
    assert all(np.isfinite(v).all() for v in values.values() if np.issubdtype(np.asarray(v).dtype, np.floating))


def _numpy_conv(x, kernel, bias, stride):
    """A 4x4 convolution padded 1 px (PyTorch's Conv2d(padding=1)): x [H,W,C], kernel [4,4,C,F]."""
    x = np.pad(x, [(1, 1), (1, 1), (0, 0)])
    out = (x.shape[0] - 4) // stride + 1, (x.shape[1] - 4) // stride + 1
    y = np.zeros([*out, kernel.shape[-1]])
    for i in range(out[0]):
        for j in range(out[1]):
            patch = x[i * stride : i * stride + 4, j * stride : j * stride + 4]
            y[i, j] = np.tensordot(patch, kernel, axes=3)
    return y + (0 if bias is None else bias)


def test_discriminator_is_tamings_patchgan():
    """Logits of taming's NLayerDiscriminator's size (PyTorch's formula for 4x4 convolutions padded
    1 px: 6x6 at 64 px, 30x30 at 256) and value (a NumPy forward pass), and its initialisation
    (kernels N(0, 0.02), norm scales N(1, 0.02)); an image too small for the stack is refused."""
    from vqvae_tf.losses.discriminator import NLayerDiscriminator

    torch_side = lambda n, layers: [n := (n + 2 - 4) // 2 + 1 for _ in range(layers)][-1] - 2  # noqa: E731
    for size, layers in ((64, 3), (256, 3), (32, 2), (24, 3)):
        disc = NLayerDiscriminator(layers, 4)
        assert disc(tf.zeros([1, size, size, 3])).shape == (1, torch_side(size, layers), torch_side(size, layers), 1)
    keras.utils.set_random_seed(1)
    disc = NLayerDiscriminator(1, 2)
    x = tf.random.stateless_uniform([1, 10, 10, 3], [4, 4])
    got = disc(x).numpy()[0]
    (c0, _), (c1, n1) = disc.blocks
    leaky = lambda v: np.where(v > 0, v, 0.2 * v)  # noqa: E731
    h = leaky(_numpy_conv(x.numpy()[0] * 2 - 1, c0.kernel.numpy(), c0.bias.numpy(), 2))
    h = _numpy_conv(h, c1.kernel.numpy(), None, 1)
    groups = h.reshape(*h.shape[:2], n1.groups, -1)  # GroupNorm over (H, W, channels of the group)
    mean, var = groups.mean((0, 1, 3), keepdims=True), groups.var((0, 1, 3), keepdims=True)
    h = ((groups - mean) / np.sqrt(var + n1.epsilon)).reshape(h.shape) * n1.gamma.numpy() + n1.beta.numpy()
    want = _numpy_conv(leaky(h), disc.logits.kernel.numpy(), disc.logits.bias.numpy(), 1)
    np.testing.assert_allclose(got, want, atol=1e-5)
    big = NLayerDiscriminator(3, 64)
    big(tf.zeros([1, 32, 32, 3]))
    kernels = np.concatenate([c.kernel.numpy().ravel() for c, _ in big.blocks])
    scales = np.concatenate([n.gamma.numpy() for _, n in big.blocks[1:]])
    assert abs(kernels.std() - 0.02) < 0.001 and abs(kernels.mean()) < 0.001
    assert abs(scales.mean() - 1) < 0.005 and 0.01 < scales.std() < 0.03
    with pytest.raises(ValueError, match="disc_layers=3 needs images of at least 24 px a side, these are 16x16"):
        gan_config(perceptual_weight=0.0, disc_layers=3).check_image_size((16, 16, 1))


def test_the_losses_image_size_is_checked_against_the_data():
    """--perceptual_weight on the tiny config (28x28) with --image_size=32: the flags pass (the data
    sets the size), the data's 32x32 trains; 28x28 data is refused naming its size."""
    from absl import app

    from vqvae_tf import cli

    class Holder:
        def __init__(self, value):
            self.value = value

    config = cli.override(get_config("tiny"), {"perceptual_weight": Holder(0.5)})
    train_vqvae_lib.fit_to_data(config, (32, 32, 3))
    assert config.image_shape == (32, 32, 3)
    with pytest.raises(ValueError, match="needs images of at least 31 px a side, these are 28x28"):
        train_vqvae_lib.fit_to_data(config, (28, 28, 1))
    with pytest.raises(app.UsageError, match="--perceptual_weight=-1.0: perceptual_weight must be >= 0"):
        cli.override(get_config("tiny"), {"perceptual_weight": Holder(-1.0)})


def test_loss_fields_are_checked():
    with pytest.raises(ValueError, match="reconstruction_loss=l1 needs likelihood=mse"):
        gan_config(likelihood="logistic")
    with pytest.raises(
        ValueError,
        match="perceptual_net=alex needs images of at least 31 px a side, these are 28x28; use --perceptual_net=vgg",
    ):
        config = get_config("tiny")
        config.perceptual_weight = 1.0
        config.validate()
    with pytest.raises(ValueError, match="adversarial_weight must be >= 0"):
        gan_config(adversarial_weight=-1.0)
    with pytest.raises(ValueError, match="disc_start must be an integer >= 0"):
        gan_config(disc_start=-2)
    with pytest.raises(ValueError, match="perceptual_start must be an integer >= 0"):
        gan_config(perceptual_start=1.5)
    assert get_config("tiny").make_objective((28, 28, 1)) is None  # the plain loss: no objective
    assert set(objective_lib.ADVERSARIAL_KEYS) <= {m.name for m in gan_model(gan_config()).metrics}


def test_gan_step_under_mixed_bfloat16():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = gan_model(gan_config())
        assert model.objective.discriminator.compute_dtype == "bfloat16"
        logs = tf.function(model.train_step)(tf.random.stateless_uniform([4, 32, 32, 1], seed=[5, 6]))
        assert all(np.isfinite(float(v)) for v in logs.values())
        assert float(logs["adaptive_weight"]) > 0
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_cpu_bf16_flag(tmp_path):
    from vqvae_tf.training import precision

    info = tmp_path / "cpuinfo"
    info.write_text("processor : 0\nflags : fpu sse avx512f avx512_bf16 amx_tile\n\nprocessor : 1\n")
    assert precision.cpu_bf16_flag(str(info)) == "avx512_bf16"
    info.write_text("processor : 0\nFeatures : fp asimd bf16\n")
    assert precision.cpu_bf16_flag(str(info)) == "bf16"
    info.write_text("processor : 0\nflags : fpu sse avx2\n")
    assert precision.cpu_bf16_flag(str(info)) is None
    assert precision.cpu_bf16_flag(str(tmp_path / "missing")) is None


def test_mixed_precision_auto_probes_records_and_keeps_its_choice(tmp_path, data_dir, monkeypatch):
    from vqvae_tf.training import precision

    config = get_config("tiny")
    config.steps, config.batch_size = 2, 8
    options = RunOptions(
        workdir=str(tmp_path), data=DataSource(None, data_dir), mixed_precision="auto", flags_text="--steps=2\n"
    )
    monkeypatch.setattr(precision, "cpu_bf16_flag", lambda: "amx_bf16")
    monkeypatch.setattr(precision, "MIN_PROBE_STEPS", 2)
    timed = []
    original = precision._compiled_step
    monkeypatch.setattr(precision, "_compiled_step", lambda b, x, p: timed.append(p) or original(b, x, p))
    path = os.path.join(str(tmp_path), "vqvae", "config.json")
    try:
        train_vqvae_lib.train_and_evaluate(config, options)
        record = json.load(open(path))
        assert timed == ["float32", "mixed_bfloat16"]
        chosen = record["mixed_precision"]
        assert chosen in ("none", "mixed_bfloat16")
        assert record["mixed_precision_choice"].startswith(f"auto -> {chosen}: bf16 steps ran ")
        flags_txt = open(os.path.join(str(tmp_path), "vqvae", "flags.txt")).read()
        assert flags_txt.startswith("--steps=2\n# --mixed_precision=auto chose " + chosen)
        # Resumed to step 4: no probe, the first choice kept.
        config.steps = 4
        train_vqvae_lib.train_and_evaluate(config, options)
        resumed = json.load(open(path))
        assert timed == ["float32", "mixed_bfloat16"]
        assert resumed["mixed_precision"] == chosen
        assert resumed["mixed_precision_choice"].startswith(f"auto -> {chosen}: this run's choice when it started")
        # A short run (under MIN_PROBE_STEPS) trains in float32 without a probe.
        monkeypatch.setattr(precision, "MIN_PROBE_STEPS", 1000)
        short = dataclasses.replace(options, workdir=str(tmp_path / "short"))
        train_vqvae_lib.train_and_evaluate(config, short)
        record = json.load(open(os.path.join(str(tmp_path), "short", "vqvae", "config.json")))
        assert timed == ["float32", "mixed_bfloat16"] and record["mixed_precision"] == "none"
        assert "a run of 4 steps (under 1000) trains in float32" in record["mixed_precision_choice"]
    finally:
        keras.mixed_precision.set_global_policy("float32")
    monkeypatch.setattr(precision, "cpu_bf16_flag", lambda: None)
    policy, why = precision.choose(None, None)
    assert policy == "none" and "reports no bf16 instructions" in why


def test_mixed_precision_probe_decides_on_the_median_of_interleaved_rounds(monkeypatch):
    """A fake clock (no real timing): the rounds alternate the policies' order; a slow spell during
    one block moves one round, not the decision; equal times keep float32; a clear gain in most
    rounds picks bf16."""
    from vqvae_tf.training import precision

    assert precision.decide([1.0] * 5, [1.0] * 5)[0] == "none"  # equal: float32 kept
    assert precision.decide([1.5] * 5, [1.0] * 5)[0] == "mixed_bfloat16"
    # A loaded machine during one float32 block (4x slower) does not make bf16 look faster.
    assert precision.decide([1.0, 4.0, 1.0, 1.0, 1.0], [1.0] * 5)[0] == "none"
    # ... nor does one slow bf16 block hide a real gain.
    assert precision.decide([1.5] * 5, [1.0, 1.0, 6.0, 1.0, 1.0])[0] == "mixed_bfloat16"
    assert precision.decide([1.5, 1.5, 1.0, 1.0, 1.0], [1.0] * 5)[0] == "none"  # 2 of 5 rounds: noise
    policy, figures = precision.decide([1.3, 1.4, 1.1, 1.35, 1.3], [1.0] * 5)
    assert policy == "mixed_bfloat16" and figures == "median 1.30x over 5 interleaved rounds (range 1.10-1.40x)"
    # Within the noise measured with float32 against itself (medians up to 1.12 on a loaded
    # machine, BENCHMARKS section 2): float32 stays.
    assert precision.decide([1.12, 1.15, 1.05, 1.1, 1.13], [1.0] * 5)[0] == "none"
    # The probe's order of blocks and what it times, with fake steps and a fake clock.
    now, order = [0.0], []

    def fake_step(build_fn, batch, policy):
        return lambda: (order.append(policy), now.__setitem__(0, now[0] + (1.0 if policy == "float32" else 0.5)))

    monkeypatch.setattr(precision, "_compiled_step", fake_step)
    f32, bf16 = precision.probe(None, None, clock=lambda: now[0])
    blocks = order[:: precision.BLOCK_STEPS]
    assert blocks[:4] == ["float32", "mixed_bfloat16", "mixed_bfloat16", "float32"]
    assert f32 == [1.0 * precision.BLOCK_STEPS] * precision.ROUNDS and bf16 == [0.5 * precision.BLOCK_STEPS] * 5


@pytest.mark.parametrize(
    "name,overrides",
    [
        ("vqvae2_tiny", {}),
        ("tiny", dict(quantizer="rvq", num_quantizers=2)),
    ],
    ids=["vqvae2", "rvq"],
)
def test_every_autoencoder_trains_with_the_full_objective(name, overrides):
    """VQ-VAE-2 (two decoders: the adaptive weight at the image decoder's last layer) and residual VQ
    (several codebooks): one compiled GAN step moves that layer and the discriminator, all finite.
    (Every quantizer's train step is tested on its own; the objective only adds terms to it.)"""
    config = get_config(name)
    config.image_shape = (32, 32, 1)
    for k, v in {**GAN, "disc_filters": 8, "disc_layers": 2, **overrides}.items():
        setattr(config, k, v)
    model = gan_model(config.validate())
    kernel, disc = model.last_layer_kernel(), model.objective.discriminator.trainable_variables[0]
    before = kernel.numpy(), disc.numpy()
    logs = tf.function(model.train_step)(tf.random.stateless_uniform([4, 32, 32, 1], seed=[8, 9]))
    assert all(np.isfinite(float(v)) for v in logs.values()), logs
    assert float(logs["adaptive_weight"]) > 0 and float(logs["perceptual_loss"]) > 0
    assert np.abs(kernel.numpy() - before[0]).max() > 0 and np.abs(disc.numpy() - before[1]).max() > 0
