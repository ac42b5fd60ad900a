"""Test set-up: quiet TF, two logical CPU devices (for MirroredStrategy tests), temp cache dir, a
smaller LPIPS evaluation."""

import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("VQVAE_CACHE_DIR", tempfile.mkdtemp(prefix="vqvae-test-cache-"))
# test_lpips on the first 64 test images of an evaluation, not 1000 (the cap is tested in test_training).
os.environ.setdefault("VQVAE_LPIPS_EXAMPLES", "64")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo root

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(_cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)


@pytest.fixture(scope="session")
def mirrored():
    # One strategy per process: each new MirroredStrategy restarts its collective instance keys,
    # and the process-wide collective executor then mixes up collectives of different strategies.
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


@pytest.fixture(scope="session")
def scripts():
    """`helpers.ScriptServer`: the scripts run as forks of one warm interpreter (their refusals)."""
    from helpers import ScriptServer

    server = ScriptServer()
    yield server
    server.close()
