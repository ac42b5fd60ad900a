"""A quiet TensorFlow import for the project's scripts (imports no TensorFlow itself).

TensorFlow's C++ runtime writes its own log to stderr: at import, before absl's log is set up,
every INFO line (oneDNN, CUDA stubs, CPU features), then warnings and errors such as "failed call
to cuInit" on a machine without a GPU driver. A user reads E-lines as failures, so when one of the
scripts (``python -m train.X`` / ``export.X``, the ``vqvae-*`` commands) imports the package:

- ``TF_CPP_MIN_LOG_LEVEL`` defaults to 3 (the C++ log off; TensorFlow's real failures still
  arrive as Python exceptions), unless the user set it;
- the import itself runs with file descriptor 2 captured: the C++ log lines it printed are dropped
  and anything else (a Python warning) is written back; if the import fails, all of it is. The
  TFLite conversions and LiteRT interpreters run the same way (`native_output_filtered`).

A library user's import is left alone (`quiet_tensorflow_import` is a no-op outside the scripts).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile

# TensorFlow's C++ log lines ("I0000 00:00:1796177185.062468   27454 port.cc:153] ...") and
# absl's note about them, the CPU-features line's continuation, and LiteRT's and the TFLite
# converter's own prints.
_NATIVE_NOISE = re.compile(
    r"^([IWEF]\d{4} [\d:. ]+\s+\d+ \S+:\d+\]|WARNING: All log messages before absl::InitializeLog"
    r"|To enable the following instructions:|INFO: Created TensorFlow Lite XNNPACK delegate"
    r"|fully_quantize: \d+, inference_type:)"
)
SCRIPT_PACKAGES = ("train.", "export.", "vqvae_tf.scripts.")


def running_a_script() -> bool:
    """Whether the process runs one of the project's scripts (not a user's program or a test)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name.startswith(SCRIPT_PACKAGES):
        return True
    return os.path.basename(sys.argv[0] if sys.argv else "").startswith("vqvae-")


def _quiet() -> bool:
    """In a script whose user did not ask for TensorFlow's log (TF_CPP_MIN_LOG_LEVEL 0 or 1)."""
    return running_a_script() and os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3") in ("2", "3")


@contextlib.contextmanager
def native_output_filtered():
    """In a quiet script, captures what native code writes to stderr (file descriptor 2) in the
    block and writes back all but its log noise (`_NATIVE_NOISE`); all of it if the block raises.
    Elsewhere, nothing changes."""
    if not _quiet():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    failed = True
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines = capture.read().decode("utf-8", "replace").splitlines(keepends=True)
            sys.stderr.write("".join(lines if failed else [x for x in lines if not _NATIVE_NOISE.match(x)]))


def quiet_tensorflow_import() -> None:
    """Imports tensorflow quietly when a script is running (see the module); else does nothing."""
    if "tensorflow" in sys.modules or not running_a_script():
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with native_output_filtered():
        import tensorflow  # noqa: F401
