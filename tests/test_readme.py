"""Every Python block of README.md runs as written (issue 27), as keras-io runs its examples.

Each block runs in a fresh process from an empty directory holding only ``E/``: the TFLite files
of the shipped preset, as ``make preset-export EXPORT_DIR=E`` writes them (float32 and float16).
A block that needs a server the test cannot start begins with ``# requires: ...`` and is skipped.
"""

import os
import re
import subprocess
import sys

import pytest
from helpers import REPO_ROOT

README = os.path.join(REPO_ROOT, "README.md")


def python_blocks() -> list:
    """(README line, code) of every ```python block."""
    text = open(README).read()
    return [(text[: m.start()].count("\n") + 1, m.group(1)) for m in re.finditer(r"```python\n(.*?)```", text, re.S)]


def _run(args, cwd, timeout=600):
    env = {**os.environ, "PYTHONPATH": REPO_ROOT}
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    """E/: what `make preset-export` writes that a block reads (its TFLite half; no block reads the
    SavedModels, which test_presets exports from the preset)."""
    root = tmp_path_factory.mktemp("preset_export")
    res = _run(
        [
            sys.executable,
            "-m",
            "export.export_tflite",
            "--preset=fashion_mnist",
            f"--export_dir={root / 'E'}",
            "--quantization=float32,float16",
        ],
        cwd=REPO_ROOT,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return root / "E"


def test_the_readme_has_its_blocks():
    blocks = python_blocks()
    assert len(blocks) >= 9
    assert sum(code.startswith("# requires:") for _, code in blocks) == 1  # the gRPC client only


@pytest.mark.slow
@pytest.mark.parametrize("line,code", python_blocks(), ids=lambda v: f"line{v}" if isinstance(v, int) else "")
def test_readme_block_runs_as_written(line, code, export_dir, tmp_path):
    if code.startswith("# requires:"):
        pytest.skip(f"README line {line}: {code.splitlines()[0][2:]}")
    work = tmp_path / "empty"
    work.mkdir()
    os.symlink(export_dir, work / "E")
    res = _run([sys.executable, "-c", code], cwd=work)
    assert res.returncode == 0, f"README.md line {line}:\n{code}\n{res.stderr[-3000:]}"
