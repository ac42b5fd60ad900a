"""Every Python block of README.md and of the guides in docs/ runs as written (issues 27, 39), as
keras-io runs its examples; every relative link between them names a file that exists.

Each block runs in a fresh process (a fork of tests/script_server.py's warm interpreter, as
``python -c``) from an empty directory holding only ``E/``: the TFLite files
of the shipped preset, as ``make preset-export EXPORT_DIR=E`` writes them (float32 and float16).
A block that needs a server the test cannot start begins with ``# requires: ...`` and is skipped.
"""

import os
import re
import subprocess

import pytest
from helpers import REPO_ROOT

README = os.path.join(REPO_ROOT, "README.md")
DOCS = sorted(
    os.path.join(REPO_ROOT, "docs", f) for f in os.listdir(os.path.join(REPO_ROOT, "docs")) if f.endswith(".md")
)


def python_blocks() -> list:
    """("file:line", code) of every ```python block of README.md and docs/*.md."""
    blocks = []
    for path in [README, *DOCS]:
        text = open(path).read()
        name = os.path.relpath(path, REPO_ROOT)
        for m in re.finditer(r"```python\n(.*?)```", text, re.S):
            blocks.append((f"{name}:{text[: m.start()].count(chr(10)) + 1}", m.group(1)))
    return blocks


def test_the_readme_is_a_front_door_and_its_links_resolve():
    """README stays short (the guides hold the manual); every relative link of README and docs/
    names an existing file, and an anchor in another guide names one of its headings."""
    assert len(open(README).read().splitlines()) <= 300
    for path in [README, *DOCS]:
        text = re.sub(r"```.*?```", "", open(path).read(), flags=re.S)
        for target in re.findall(r"\]\(([^)#:]*)(?:#([\w-]+))?\)", text):
            file, anchor = target
            if not file and not anchor:
                continue
            full = os.path.normpath(os.path.join(os.path.dirname(path), file)) if file else path
            assert os.path.exists(full), f"{path}: link to {file}"
            if anchor and full.endswith(".md"):
                headings = re.findall(r"^#+ (.*)$", re.sub(r"```.*?```", "", open(full).read(), flags=re.S), re.M)
                anchors = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}
                assert anchor in anchors, f"{path}: no heading #{anchor} in {file}"


def _run(args, cwd, timeout=600):
    env = {**os.environ, "PYTHONPATH": REPO_ROOT}
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory, scripts):
    """E/: what `make preset-export` writes that a block reads (its TFLite half; no block reads the
    SavedModels, which test_presets exports from the preset)."""
    root = tmp_path_factory.mktemp("preset_export")
    args = ["--preset=fashion_mnist", f"--export_dir={root / 'E'}", "--quantization=float32,float16"]
    res = scripts.run("export.export_tflite", *args, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return root / "E"


def test_the_readme_has_its_blocks():
    blocks = python_blocks()
    assert len(blocks) >= 10 and blocks[0][0].startswith("README.md")
    assert sum(code.startswith("# requires:") for _, code in blocks) == 1  # the gRPC client only


@pytest.mark.slow
@pytest.mark.parametrize("line,code", python_blocks(), ids=lambda v: v if ":" in v else "")
def test_readme_block_runs_as_written(line, code, export_dir, scripts, tmp_path):
    if code.startswith("# requires:"):
        pytest.skip(f"{line}: {code.splitlines()[0][2:]}")
    work = tmp_path / "empty"
    work.mkdir()
    os.symlink(export_dir, work / "E")
    (tmp_path / "block.py").write_text(code)
    # (a fork of the warm script server: as `python -c CODE` from `work`, without the TF import each time)
    res = scripts.run_file(tmp_path / "block.py", cwd=work)
    assert res.returncode == 0, f"{line}:\n{code}\n{res.stderr[-3000:]}"
