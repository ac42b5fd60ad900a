"""The "taming" network (VQGAN's / diffusers VQModel's) as a network of the zoo's VQVAE: options,
training from scratch by a named config, and decoder-only fine-tuning (tests/test_convert.py
checks it against the reference implementations)."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from vqvae_tf import VQVAE, get_config
from vqvae_tf.layers import networks
from vqvae_tf.training import train_vqvae_lib

OPTIONS = dict(block_out_channels=[8, 16], norm_num_groups=4, latent_channels=4, down_attention=[False, True])


def tiny(**changes):
    fields = dict(network="taming", network_options=OPTIONS, downsample=2, image_shape=(16, 16, 3), quantizer="vq")
    return dataclasses.replace(get_config("tiny"), **{**fields, **changes}).validate()


def test_the_named_config_builds_vqgans_network():
    config = get_config("taming_64")
    assert config.network == "taming" and config.network_options["block_out_channels"] == [64, 128, 128]
    assert config.latent_shape == (16, 16) and config.adversarial
    model = VQVAE(**{**config.network_kwargs(), "image_shape": (16, 16, 3)})  # (the same layers, fewer pixels)
    assert model.encode(tf.zeros([1, 16, 16, 3])).shape == (1, 4, 4)
    assert [level.attentions != [] for level in model.encoder.levels] == [False, False, True]


def test_a_tiny_taming_vqvae_trains_and_round_trips():
    config = tiny()
    model = train_vqvae_lib.build_vqvae(config, 0.1, 0)
    x = tf.random.stateless_uniform([4, 16, 16, 3], seed=[1, 2])
    logs = [model.train_on_batch(x, return_dict=True) for _ in range(3)]
    assert all(np.isfinite(v) for v in logs[-1].values())
    assert model.network_options["up_attention"] == [False, False] and model.network_options["norm_eps"] == 1e-6
    reloaded = VQVAE.from_config(model.get_config())
    reloaded.set_weights(model.get_weights())
    np.testing.assert_array_equal(reloaded.encode(x).numpy(), model.encode(x).numpy())
    assert config.to_dict()["network_options"] == model.network_options


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(downsample=4), "downsample=4 does not match the taming network's 2 levels: it must be 2"),
        (dict(network_options={**OPTIONS, "heads": 2}), r"Unknown taming network options \['heads'\]"),
        (dict(network_options={**OPTIONS, "norm_num_groups": 3}), "divide into norm_num_groups=3 groups"),
        (dict(network_options={**OPTIONS, "down_attention": [True]}), "one flag per level"),
        (dict(network_options={**OPTIONS, "norm_type": "batch"}), "norm_type must be one of"),
        (dict(network="unet"), "network must be one of 'vqvae', 'taming', got 'unet'"),
        (dict(network="vqvae"), r"network_options are not taken by this network"),
    ],
)
def test_bad_network_options_are_named(changes, message):
    with pytest.raises(ValueError, match=message):
        tiny(**changes)


@pytest.mark.parametrize("quantizer", ["vq", "ema"])  # (a gradient-trained codebook; one the training call updates)
def test_decoder_only_training_keeps_the_codes(quantizer):
    """trainable="decoder": the encoder and codebook do not move (so the codes do not), the decoder does."""
    config = tiny(trainable="decoder", learning_rate=1e-2, quantizer=quantizer)
    model = train_vqvae_lib.build_vqvae(config, 0.1, 0)
    assert not [v for v in model.trainable_variables if "encoder" in v.path or "codebook" in v.path]
    x = tf.random.stateless_uniform([4, 16, 16, 3], seed=[3, 4])
    before = {v.path: v.numpy().copy() for v in model.weights}
    codes = model.encode(x).numpy()
    for _ in range(2):
        model.train_on_batch(x)
    moved = {p for p, v in before.items() if not np.array_equal(v, _value(model, p))}
    assert any("/decoder/" in p for p in moved)  # (paths start with the model's name: vqvae, vqvae_1, ...)
    assert not [p for p in moved if "/encoder/" in p or "codebook" in p], moved
    np.testing.assert_array_equal(model.encode(x).numpy(), codes)
    with pytest.raises(ValueError, match="trainable must be one of"):
        tiny(trainable="encoder")
    # The optimizer holds state for other variables: a run cannot resume with the other choice.
    assert config.architecture()["trainable"] == "decoder" and tiny().architecture()["trainable"] == "all"


def _value(model, path):
    return next(v for v in model.weights if v.path == path).numpy()


def test_networks_are_registered_by_name():
    assert networks.names()[:2] == ("vqvae", "taming")
    assert networks.get("taming").downsample({}, {"block_out_channels": [32] * 5}) == 16


def test_the_decoder_only_flag_needs_a_preset(scripts, tmp_path):
    res = scripts.run("train.train_vqvae", f"--workdir={tmp_path / 'w'}", "--trainable=decoder")
    assert (
        res.returncode != 0 and "--trainable=decoder fine-tunes a preset's decoder: it needs --init_from" in res.stderr
    )
    res = scripts.run(
        "train.train_vqvae",
        f"--workdir={tmp_path / 'w'}",
        "--trainable=decoder",
        "--init_from=fashion_mnist",
        "--reinit_codebook",
    )
    assert res.returncode != 0 and "(no --reinit_codebook)" in res.stderr
    assert not (tmp_path / "w").exists()


def test_a_network_name_is_registered_once():
    from vqvae_tf.layers import networks

    with pytest.raises(ValueError, match="A network named 'taming' is registered already \\(TamingNetwork\\)"):
        networks.register_network("taming")(type("Other", (networks.Network,), {}))
    networks.register_network("taming")(networks.get("taming"))  # (the same class again: nothing happens)
    assert networks.names() == ("vqvae", "taming")


@pytest.mark.parametrize("groups", [1, 4, 32])
def test_group_norm_equals_numpy(groups):
    """The taming network's GroupNorm (channel-contiguous reductions) against NumPy's group norm in
    float64, on activations far from zero mean (where a one-pass E[x^2] - E[x]^2 would lose digits)."""
    from vqvae_tf.layers.taming import GroupNorm

    rng = np.random.default_rng(groups)
    x = (rng.normal(size=(2, 5, 3, 64)) * rng.uniform(0.1, 3, size=64) + rng.normal(size=64) * 300).astype(np.float32)
    gamma, beta = rng.normal(size=64).astype(np.float32), rng.normal(size=64).astype(np.float32)
    layer = GroupNorm(groups, epsilon=1e-6)
    layer.build(x.shape)
    layer.gamma.assign(gamma)
    layer.beta.assign(beta)
    g = x.astype(np.float64).reshape(2, 5, 3, groups, 64 // groups)
    mean, var = g.mean(axis=(1, 2, 4), keepdims=True), g.var(axis=(1, 2, 4), keepdims=True)
    want = ((g - mean) / np.sqrt(var + 1e-6)).reshape(x.shape) * gamma + beta
    np.testing.assert_allclose(layer(x).numpy(), want, atol=2e-5)
    mixed = GroupNorm(groups, epsilon=1e-6, dtype="mixed_bfloat16")  # statistics in float32, output in bf16
    mixed.build(x.shape)
    mixed.set_weights([gamma, beta])
    rounded = tf.cast(tf.cast(x, tf.bfloat16), tf.float32)  # (what bf16 keeps of the input)
    out = mixed(rounded)
    assert out.dtype == tf.bfloat16
    np.testing.assert_allclose(tf.cast(out, tf.float32).numpy(), layer(rounded).numpy(), rtol=1e-2, atol=1e-2)
    with pytest.raises(ValueError, match="64 channels in 3 groups"):
        GroupNorm(3).build(x.shape)
