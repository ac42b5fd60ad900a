"""The package map of README's Architecture section holds: data flows one way."""

import ast
import os
import pathlib

import pytest
from helpers import REPO_ROOT

# README "Architecture": a module never imports from a later line of this map.
ORDER = ["_console", "utils", "data", "layers", "losses", "models", "configs", "training", "serving", "convert"]
ORDER += ["pipeline", "cli"]
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


def test_the_architecture_guide_maps_every_module():
    """docs/architecture.md's package map names every module of vqvae_tf/, and every module it names exists."""
    import re

    text = (pathlib.Path(REPO_ROOT) / "docs" / "architecture.md").read_text()
    package_map = text.split("```")[1]
    modules = {p.name for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"}
    named = set(re.findall(r"\b(\w+\.py)\b", package_map))
    assert modules - named == set(), "modules missing from the map"
    scripts = {p.name for folder in ("train", "export") for p in (pathlib.Path(REPO_ROOT) / folder).glob("*.py")}
    placeholders = {"x.py", "x_lib.py", "__init__.py"}  # (train/x.py <-> training/x_lib.py; configs/__init__.py)
    assert named - modules - scripts - placeholders == set(), "the map names modules that do not exist"


def test_scripts_are_thin():
    """Scripts parse flags and make one library call: no logic of their own."""
    for folder in ("train", "export"):
        for path in sorted((pathlib.Path(REPO_ROOT) / folder).glob("*.py")):
            tree = ast.parse(path.read_text())
            functions = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
            assert functions in ([], ["main", "run"]), f"{path} defines {functions}"


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    return tomllib.loads((pathlib.Path(REPO_ROOT) / "pyproject.toml").read_text())


def test_wheel_holds_vqvae_tf_only_with_the_scripts_as_commands():
    """The wheel lists every package of the tree (no generic top-level `train`/`export`: they go in
    as vqvae_tf.scripts.*), and each installed command names a script's `run`."""
    tool = _pyproject()["tool"]["setuptools"]
    tree = [".".join(path.parent.relative_to(REPO_ROOT).parts) for path in sorted(PACKAGE.rglob("__init__.py"))]
    mapped = {package: folder for package, folder in tool["package-dir"].items()}
    assert sorted(tool["packages"]) == sorted(tree + list(mapped))
    assert all(p.startswith("vqvae_tf.") for p in tool["packages"] if p != "vqvae_tf")
    for command, target in _pyproject()["project"]["scripts"].items():
        module, function = target.split(":")
        package, name = module.rsplit(".", 1)
        path = pathlib.Path(REPO_ROOT) / mapped[package] / f"{name}.py"
        assert command.startswith("vqvae-") and function == "run" and path.is_file(), target
        assert "def run():" in path.read_text(), path
    scripts = {p.stem for folder in mapped.values() for p in (pathlib.Path(REPO_ROOT) / folder).glob("[!_]*.py")}
    assert scripts == {t.split(":")[0].rsplit(".", 1)[1] for t in _pyproject()["project"]["scripts"].values()}
    # The commands' names in messages (utils.commands.COMMANDS) are pyproject's.
    from vqvae_tf.utils import commands

    installed = {
        t.split(":")[0].removeprefix("vqvae_tf.scripts."): c for c, t in _pyproject()["project"]["scripts"].items()
    }
    assert commands.COMMANDS == installed


def test_installed_commands_show_their_flags_and_speak_their_names(tmp_path):
    """Run as an installed command (vqvae-train-prior: the wheel's script, built here into a
    target folder), --help lists the script's flags and docstring in the command's name, and an
    error names the command and the next command to run, not `python -m train.X`."""
    import shutil
    import subprocess
    import sys

    source, target = tmp_path / "src", tmp_path / "pkg"  # (a copy: the build writes build/ beside the sources)
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "vqvae_tf", "train", "export"):
        if os.path.isdir(os.path.join(REPO_ROOT, name)):
            shutil.copytree(os.path.join(REPO_ROOT, name), source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(os.path.join(REPO_ROOT, name), source / name)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target)]
        + [str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(target)}
    command = [sys.executable, str(target / "bin" / "vqvae-train-prior")]
    shown = subprocess.run(command + ["--help"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert "  --workdir:" in shown.stdout and "  --prior:" in shown.stdout, shown.stdout
    assert "vqvae-train-prior --workdir" in shown.stdout and "python -m train" not in shown.stdout
    failed = subprocess.run(
        command + [f"--workdir={tmp_path / 'none'}"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300
    )
    assert failed.returncode == 2
    assert failed.stderr.strip().splitlines()[-1].startswith("vqvae-train-prior: error: No exported codes")
    assert "Run vqvae-export-codes first." in failed.stderr


def test_declared_dependencies_cover_the_imports():
    """Every third-party module the library or its scripts import at run time comes from a
    distribution pyproject.toml declares (a pip-installed user's run must not die on an import),
    or an optional one (hf:// addresses: huggingface_hub, imported where used, with a clear error)."""
    import importlib.metadata
    import re
    import sys

    def normal(name):
        return re.sub(r"[-_.]+", "-", name).lower()

    project = _pyproject()["project"]
    optional = [d for extra in project.get("optional-dependencies", {}).values() for d in extra]
    declared = {normal(re.split(r"[<>=!~ \[;]", d)[0]) for d in project["dependencies"] + optional}
    providers = importlib.metadata.packages_distributions()
    imported = set()
    for folder in ("vqvae_tf", "train", "export"):
        for path in (pathlib.Path(REPO_ROOT) / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    imported |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"vqvae_tf", "train", "export", "__future__"}
    assert third_party >= {"matplotlib", "tensorflow_serving", "numpy", "absl"}  # the check sees them
    # (a module of an optional dependency that is not installed: its distribution has its name)
    missing = {m: providers.get(m) for m in third_party if not declared & {normal(d) for d in providers.get(m) or [m]}}
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_the_configs_docstring_names_every_named_config():
    """configs/__init__.py's overview lists every named config, prior config and recipe (a new
    one added without it leaves the overview stale)."""
    import re

    from vqvae_tf import configs

    words = set(re.findall(r"\w+", configs.__doc__))
    for names in (configs.CONFIG_NAMES, configs.PRIOR_CONFIG_NAMES, configs.RECIPE_NAMES):
        assert set(names) <= words, set(names) - words
