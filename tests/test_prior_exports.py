"""Every prior family's SavedModel: `serving_default` (MaskGIT's with `steps`), `log_prob` where the
likelihood is exact, and `sample_xla` (--xla_sampler) giving the portable signature's codes; the
seeded uniforms behind the samplers, the same with and without XLA."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from helpers import REPO_ROOT, numpy_uniform, peaked, warmup_requests

from vqvae_tf import MaskGITPrior, PixelCNN, TransformerPrior, get_config
from vqvae_tf.models.priors.sampling import sample_grids
from vqvae_tf.serving import savedmodel
from vqvae_tf.utils import hash_random

K, GRID, CLASSES = 16, (7, 7), 3


def test_hash_uniforms_match_numpy_and_xla():
    args = (tf.constant(7), tf.constant(-3), tf.constant([2, 500]))
    got = hash_random.uniform(*args).numpy()
    xla = tf.function(hash_random.uniform, jit_compile=True)(*args).numpy()
    np.testing.assert_array_equal(got, xla)
    np.testing.assert_array_equal(got.ravel(), numpy_uniform(7, -3, 1000).astype(np.float32))


def test_hash_uniforms_are_uniform_and_their_streams_independent():
    """64 bins pass a chi-square test (63 dof: mean 63, sd 11.2); both ends of [0, 1) are reached;
    streams of one seed (the samplers' positions and steps, negative ones too) and equal streams of
    neighbouring seeds are uncorrelated, two-sided (|r| < 5 / sqrt(n): an anti-correlated stream fails)."""
    big = hash_random.uniform(1, 0, [200_000]).numpy()
    counts = np.bincount((big * 64).astype(int), minlength=64)
    assert ((counts - 200_000 / 64) ** 2 / (200_000 / 64)).sum() < 63 + 5 * 11.2
    assert big.min() < 1e-4 and big.max() > 1 - 1e-4
    n, streams = 4096, np.arange(-8, 40)
    rows = np.stack([hash_random.uniform(5, int(s), [n]).numpy() for s in streams])
    r = np.corrcoef(rows)
    off_diagonal = r[~np.eye(len(streams), dtype=bool)]
    assert np.abs(off_diagonal).max() < 5 / np.sqrt(n), np.abs(off_diagonal).max()
    for seed in (6, -5):
        other = np.stack([hash_random.uniform(seed, int(s), [n]).numpy() for s in streams])
        cross = [np.corrcoef(a, b)[0, 1] for a, b in zip(rows, other)]
        assert np.abs(cross).max() < 5 / np.sqrt(n)
    # Serial correlation within a stream (lag 1 and 2).
    for lag in (1, 2):
        assert abs(np.corrcoef(big[:-lag], big[lag:])[0, 1]) < 5 / np.sqrt(len(big))


@pytest.mark.parametrize("network", ["pixelcnn", "transformer"])
@pytest.mark.parametrize("fast", [True, False])
def test_each_position_draws_from_its_own_stream(network, fast):
    """With every weight zero the logits are uniform over K = 16 codes, so a sampled code is
    floor(16 u) of the uniform its position drew: position p of sample n must read element n of
    stream p (`hash_random.uniform(seed, p, [N])`), which the TFLite generators reproduce."""
    prior = _prior(network)
    for v in prior.weights:
        v.assign(np.zeros(v.shape, v.dtype.name if hasattr(v.dtype, "name") else v.dtype))
    n, seed = 64, 11
    codes = prior.sample_grids_graph(n, 1.0, seed, labels=tf.zeros([n], tf.int32), fast=fast)["codes"].numpy()
    length = GRID[0] * GRID[1]
    want = np.stack([np.floor(numpy_uniform(seed, p, n) * K) for p in range(length)], axis=1)
    np.testing.assert_array_equal(codes.reshape(n, length), want.astype(np.int32))


def _prior(network):
    common = dict(num_embeddings=K, latent_shape=GRID, num_classes=CLASSES)
    if network == "pixelcnn":
        return peaked(PixelCNN(num_filters=8, num_layers=3, kernel_size=5, **common), std=0.5)
    cls = TransformerPrior if network == "transformer" else MaskGITPrior
    return peaked(cls(width=16, num_layers=1, num_heads=2, **common), std=0.5)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """{network: (prior, vqvae, loaded SavedModel, path)} for the three single-grid priors,
    exported with --xla_sampler beside the untrained tiny VQ-VAE (K=16, 7x7 codes)."""
    root = tmp_path_factory.mktemp("priors")
    vqvae = get_config("tiny").build()
    out = {}
    for network in ("pixelcnn", "transformer", "maskgit"):
        prior = _prior(network)
        path = savedmodel.export_prior(prior, vqvae, str(root / network), xla_sampler=True)
        out[network] = (prior, vqvae, tf.saved_model.load(path), path)
    return out


@pytest.mark.parametrize("network", ["pixelcnn", "transformer", "maskgit"])
def test_signatures_and_codes(exported, network):
    prior, vqvae, sm, path = exported[network]
    sigs = sm.signatures
    exact = network != "maskgit"
    assert set(sigs) == {"serving_default", "sample_xla"} | ({"log_prob"} if exact else set())
    names = {"num_samples", "temperature", "seed", "labels"} | ({"steps"} if network == "maskgit" else set())
    for name in ("serving_default", "sample_xla"):
        assert set(sigs[name].structured_input_signature[1]) == names
    labels = np.array([0, 2, 1, 2, 0], np.int32)
    inputs = dict(num_samples=5, temperature=0.9, seed=11, labels=labels)
    options = {}
    if network == "maskgit":
        inputs["steps"], options["steps"] = 4, 4
    out = sigs["serving_default"](**{k: tf.constant(v) for k, v in inputs.items()})
    want = sample_grids(prior, 5, 0.9, 11, labels, **options)["codes"].numpy()
    np.testing.assert_array_equal(out["codes"].numpy(), want)
    assert len(np.unique(want)) > 4  # peaked, not degenerate
    np.testing.assert_allclose(out["images"].numpy(), vqvae.decode(want).numpy(), atol=1e-5)
    xla = sigs["sample_xla"](**{k: tf.constant(v) for k, v in inputs.items()})
    np.testing.assert_array_equal(xla["codes"].numpy(), want)
    np.testing.assert_allclose(xla["images"].numpy(), out["images"].numpy(), atol=1e-4)
    other = sigs["serving_default"](**{k: tf.constant(v) for k, v in {**inputs, "seed": 12}.items()})
    assert not np.array_equal(other["codes"].numpy(), want)
    if exact:
        lp = sigs["log_prob"](codes=tf.constant(want), labels=tf.constant(labels))["log_prob"].numpy()
        np.testing.assert_allclose(lp, prior.log_prob(want, labels).numpy(), rtol=1e-5)
    # The warmup replays serving_default (and log_prob), never sample_xla: a server started
    # without --xla_cpu_compilation_enabled would fail to load the model.
    replayed = [name for name, _, _ in warmup_requests(path)]
    assert replayed == ["serving_default"] + (["log_prob"] if exact else [])
    for name, request_inputs, _ in warmup_requests(path):
        sigs[name](**request_inputs)


def test_maskgit_steps_is_an_input(exported):
    prior, _, sm, _ = exported["maskgit"]
    run = lambda steps: sm.signatures["serving_default"](  # noqa: E731
        num_samples=tf.constant(3), temperature=tf.constant(1.0), seed=tf.constant(1),
        labels=tf.constant([0, 1, 2]), steps=tf.constant(steps),
    )["codes"].numpy()  # fmt: skip
    for steps in (1, 8):
        np.testing.assert_array_equal(run(steps), sample_grids(prior, 3, 1.0, 1, [0, 1, 2], steps=steps)["codes"])
    assert not np.array_equal(run(1), run(8))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"steps must be in \[1, 256\], got\] \[0\]"):
        run(0)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"steps must be in \[1, 256\], got\] \[257\]"):
        run(257)


BAD_SAMPLE_INPUTS = [
    (dict(num_samples=0, labels=[]), r"num_samples must be in \[1, 256\], got\] \[0\]"),
    (dict(num_samples=1000, labels=[0] * 1000), r"num_samples must be in \[1, 256\], got\] \[1000\]"),
    (dict(temperature=0.0), r"temperature must be finite and > 0, got\] \[0\]"),
    (dict(temperature=float("nan")), r"temperature must be finite and > 0, got\] \[nan\]"),
    (dict(temperature=float("inf")), r"temperature must be finite and > 0, got\] \[inf\]"),
    (dict(labels=[0, 99]), r"labels must be in \[0, 3\): found values from\] \[0\] \[to\] \[99\]"),
    (dict(labels=[-1, 0]), r"labels must be in \[0, 3\): found values from\] \[-1\]"),
    (dict(labels=[0, 1, 2]), r"labels must be one per sample: got\] \[3\] \[for num_samples\] \[2\]"),
    (dict(steps=0), r"steps must be in \[1, 256\], got\] \[0\]"),
    (dict(steps=1000), r"steps must be in \[1, 256\], got\] \[1000\]"),
]


@pytest.mark.parametrize("signature", ["serving_default", "sample_xla"])
@pytest.mark.parametrize("network", ["pixelcnn", "transformer", "maskgit"])
def test_bad_sample_inputs_fail_in_every_sampling_signature(exported, network, signature):
    """Each bad input fails with InvalidArgumentError naming it, in sample_xla too: XLA drops the
    sampler's own Assert ops, so the signature checks its inputs before the compiled sampler."""
    sig = exported[network][2].signatures[signature]
    good = dict(num_samples=2, temperature=1.0, seed=0, labels=[0, 1]) | ({"steps": 2} if network == "maskgit" else {})
    dtypes = dict(num_samples=tf.int32, temperature=tf.float32, seed=tf.int32, labels=tf.int32, steps=tf.int32)
    sig(**{k: tf.constant(v, dtypes[k]) for k, v in good.items()})
    for bad, message in BAD_SAMPLE_INPUTS:
        if "steps" in bad and network != "maskgit":
            continue
        inputs = {k: tf.constant(v, dtypes[k]) for k, v in (good | bad).items()}
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            sig(**inputs)


SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.path = [p for p in sys.path if p not in ("", {repo!r}) and "__editable__" not in p]
    try:
        import vqvae_tf  # noqa: F401
        raise SystemExit("vqvae_tf must not be importable here")
    except ImportError:
        pass
    import tensorflow as tf
    out = {{}}
    for name, path in {paths!r}.items():
        sigs = tf.saved_model.load(path).signatures
        inputs = dict(num_samples=tf.constant(2), temperature=tf.constant(1.0), seed=tf.constant(4),
                      labels=tf.constant([1, 2]))
        if "steps" in sigs["serving_default"].structured_input_signature[1]:
            inputs["steps"] = tf.constant(3)
        out[name] = [sigs[s](**inputs)["codes"].numpy().tolist() for s in ("serving_default", "sample_xla")]
    print(json.dumps(out))
    """
)


def test_load_and_sample_without_the_package(exported, tmp_path):
    paths = {"maskgit": exported["maskgit"][3]}  # (the transformer's SavedModel is built the same way)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(repo=REPO_ROOT, paths=paths)],
        cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    for name, (portable, xla) in got.items():
        prior = exported[name][0]
        options = {"steps": 3} if name == "maskgit" else {}
        want = sample_grids(prior, 2, 1.0, 4, [1, 2], **options)["codes"].numpy()
        np.testing.assert_array_equal(np.array(portable), want)
        np.testing.assert_array_equal(np.array(xla), want)


@pytest.mark.parametrize("network", ["transformer", "maskgit"])
def test_tflite_generator_builtin_only_and_equal_to_the_savedmodel(exported, network, tmp_path):
    """The on-device generator converts with builtin ops only, matches TensorFlow's sampler on the
    same uniforms, and fed the uniforms the seeded sampler draws, gives the SavedModel's codes."""
    from vqvae_tf.serving import tflite

    prior, vqvae, sm, _ = exported[network]
    report = tflite.export_generator(prior, vqvae, str(tmp_path), quantizations=("float32",))["float32"]
    assert report["converted"], report
    assert report["code_agreement_vs_tensorflow"] == 1.0 and report["images_max_abs_error_vs_tensorflow"] < 1e-4
    data = open(tmp_path / "tflite" / report["file"], "rb").read()
    ops = tflite.op_names(data)
    assert not [op for op in ops if op.startswith("Flex") or op in ("CUSTOM", "VAR_HANDLE")], ops
    n, seed, labels, length = 3, 5, np.array([2, 0, 1], np.int32), GRID[0] * GRID[1]
    steps = 4
    if network == "maskgit":  # [N, steps, 2, T]: each step's picks (0) and choice noise (1)
        uniforms = np.stack(
            [np.stack([hash_random.uniform(seed, s, [n, length]), hash_random.uniform(seed, -1 - s, [n, length])], 1)
             for s in range(steps)], 1)  # fmt: skip
        inputs = {"steps": tf.constant(steps)}
    else:  # [N, T]: position p's pick
        uniforms = np.stack([hash_random.uniform(seed, p, [n]) for p in range(length)], 1)
        inputs = {}
    assert uniforms.shape[1:] == tuple(prior.generator_uniforms_shape(steps))
    got = tflite.run_signature(
        data, "generate", uniforms=uniforms.astype(np.float32), temperature=np.float32(1.0), labels=labels
    )
    want = sm.signatures["serving_default"](
        num_samples=tf.constant(n), temperature=tf.constant(1.0), seed=tf.constant(seed), labels=tf.constant(labels),
        **inputs,
    )  # fmt: skip
    np.testing.assert_array_equal(got["codes"], want["codes"].numpy())
    np.testing.assert_allclose(got["images"], want["images"].numpy(), atol=1e-4)
    if network == "maskgit":  # S = 0 steps: LiteRT returns all-zero codes; the helper refuses it
        with pytest.raises(ValueError, match=r"generate: uniforms has an empty dimension: shape \[3, 0, 2, 49\]"):
            tflite.run_signature(
                data,
                "generate",
                uniforms=uniforms[:, :0].astype(np.float32),
                temperature=np.float32(1.0),
                labels=labels,
            )


def test_residual_vq_codes_through_the_savedmodel_and_generator(tmp_path, network="transformer"):
    """Residual VQ (depth 2): the prior's grid holds a position's depths side by side; the
    SavedModel and the on-device generator give [N, h, w, 2] codes, those of the library sampler.
    (The transformer's: the signatures and the generator are the same code for every prior; the
    MaskGIT depth layout is tested in test_maskgit_prior.)"""
    import dataclasses

    from vqvae_tf.serving import tflite

    vqvae = dataclasses.replace(get_config("tiny"), quantizer="rvq", num_quantizers=2).validate().build()
    assert vqvae.codes_shape == (7, 7, 2)
    cls = TransformerPrior if network == "transformer" else MaskGITPrior
    prior = peaked(cls(num_embeddings=K, latent_shape=(7, 14), depth=2, width=16, num_layers=1, num_heads=2), 0.5)
    sigs = tf.saved_model.load(savedmodel.export_prior(prior, vqvae, str(tmp_path / "e"), xla_sampler=True)).signatures
    inputs = dict(num_samples=tf.constant(3), temperature=tf.constant(1.0), seed=tf.constant(2))
    options = {"steps": 4} if network == "maskgit" else {}
    inputs.update({k: tf.constant(v) for k, v in options.items()})
    want = vqvae.from_prior_grid(sample_grids(prior, 3, 1.0, 2, **options)["codes"]).numpy()
    assert want.shape == (3, 7, 7, 2) and len(np.unique(want)) > 4
    for name in ("serving_default", "sample_xla"):
        np.testing.assert_array_equal(sigs[name](**inputs)["codes"].numpy(), want)
    report = tflite.export_generator(prior, vqvae, str(tmp_path), quantizations=("float32",))["float32"]
    assert report["converted"] and report["code_agreement_vs_tensorflow"] == 1.0, report
