"""The package map of README's Architecture section holds: data flows one way."""

import ast
import os
import pathlib

import pytest
from helpers import REPO_ROOT

# README "Architecture": a module never imports from a later line of this map.
ORDER = ["utils", "data", "layers", "models", "configs", "training", "serving", "pipeline", "cli"]
PACKAGE = pathlib.Path(REPO_ROOT) / "vqvae_tf"


def _imported_parts(path: pathlib.Path):
    """The vqvae_tf sub-packages / modules that `path` imports."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "vqvae_tf":
            parts = node.module.split(".")
            yield from ([parts[1]] if len(parts) > 1 else [a.name for a in node.names])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "vqvae_tf" and len(parts) > 1:
                    yield parts[1]


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).parts
        if rel == ("__init__.py",):
            continue  # the public API re-exports from everywhere
        yield path, rel[0].removesuffix(".py")


def test_every_module_is_on_the_map():
    assert {top for _, top in _modules()} == set(ORDER)


@pytest.mark.parametrize("path,top", list(_modules()), ids=lambda v: str(v).split("vqvae_tf" + os.sep)[-1])
def test_no_import_from_a_later_stage(path, top):
    later = [m for m in _imported_parts(path) if m in ORDER and ORDER.index(m) > ORDER.index(top)]
    assert not later, f"{path} ({top}) imports {later}, which come later in the package map"


def test_scripts_are_thin():
    """Scripts parse flags and make one library call: no logic of their own."""
    for folder in ("train", "export"):
        for path in sorted((pathlib.Path(REPO_ROOT) / folder).glob("*.py")):
            tree = ast.parse(path.read_text())
            functions = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
            assert functions in ([], ["main"]), f"{path} defines {functions}"
