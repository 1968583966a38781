"""The per-rule conda environments (envs/*.yaml) against pyproject.toml and the rules that use them.

No conda runs here: the environments are checked as files. Each is complete and pinned, its pins equal the
development install's (pyproject.toml), every rule names one of them and a log file, and each rule's environment
provides every package that the rule's script imports, through the gradbrain modules it uses.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from functools import cache
from pathlib import Path

import pytest
import yaml
from helpers import REPO
from helpers.rules import action_rules, literal
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = REPO
ENV_DIR = ROOT / "envs"
LIBRARY = ROOT / "workflow" / "gradbrain"
ENV_FILES = sorted(ENV_DIR.glob("*.yaml"))
EXPECTED_ENVS = {"extract.yaml", "neuro.yaml", "stats.yaml"}
DRIVER_ONLY = {"snakemake", "jsonschema"}  # run the workflow itself, never inside a rule's environment
CONDA_NAMES = {"pytorch": "torch", "mne-base": "mne", "matplotlib-base": "matplotlib"}
# import name -> distributions that provide it (the first is the one to pin; the others bring it as a dependency)
MODULE_DISTRIBUTIONS = {
    "torch": ["torch"],
    "torchvision": ["torchvision"],
    "timm": ["timm"],
    "open_clip": ["open-clip-torch"],
    "safetensors": ["safetensors", "timm"],
    "huggingface_hub": ["huggingface-hub", "timm"],
    "numpy": ["numpy"],
    "scipy": ["scipy"],
    "array_api_compat": ["array-api-compat"],
    "pandas": ["pandas"],
    "sklearn": ["scikit-learn"],
    "skimage": ["scikit-image"],
    "himalaya": ["himalaya"],
    "h5py": ["h5py"],
    "nibabel": ["nibabel"],
    "mne": ["mne"],
    "nilearn": ["nilearn"],
    "zarr": ["zarr"],
    "matplotlib": ["matplotlib"],
    "PIL": ["pillow"],
    "yaml": ["pyyaml"],
    "tqdm": ["tqdm"],
    "jsonschema": ["jsonschema"],
    "boto3": ["boto3"],
    "botocore": ["botocore", "boto3"],
}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def load_env(path: Path) -> dict:
    with open(path) as fh:
        return yaml.safe_load(fh)


def env_pins(env: dict) -> dict[str, str | None]:
    """Distribution name (normalised, PyPI spelling) -> pinned version (None when unpinned)."""
    pins: dict[str, str | None] = {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for spec in dep.get("pip", []):
                req = Requirement(spec)
                exact = [s.version for s in req.specifier if s.operator == "=="]
                pins[normalise(req.name)] = exact[0] if len(exact) == 1 and len(req.specifier) == 1 else None
        else:
            match = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*(?:==?|\s)\s*([^\s,|<>=!*]+)", str(dep).strip())
            name = match.group(1) if match else re.split(r"[\s=<>!]", str(dep).strip())[0]
            pins[normalise(CONDA_NAMES.get(name, name))] = match.group(2) if match else None
    return pins


@cache
def pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)


def runtime_requirements() -> dict[str, Requirement]:
    return {normalise(r.name): r for r in map(Requirement, pyproject()["project"]["dependencies"])}


# -------------------------------------------------------------------------------------------- the env files
def test_the_three_environments_exist():
    assert {p.name for p in ENV_FILES} >= EXPECTED_ENVS


@pytest.mark.parametrize("path", ENV_FILES, ids=lambda p: p.name)
def test_env_is_complete_and_pinned(path):
    env = load_env(path)
    assert env.get("name"), f"{path.name}: no name"
    assert env.get("channels", [])[:1] == ["conda-forge"], f"{path.name}: conda-forge must come first"
    assert "defaults" not in env["channels"], f"{path.name}: the defaults channel needs an Anaconda licence"
    pins = env_pins(env)
    unpinned = sorted(name for name, version in pins.items() if version is None)
    assert not unpinned, f"{path.name}: not pinned to one version: {unpinned}"
    python = pins.get("python")
    assert python, f"{path.name}: python is not pinned"
    requires = SpecifierSet(pyproject()["project"]["requires-python"])
    assert requires.contains(f"{python}.0" if python.count(".") == 1 else python), (
        f"{path.name}: python={python} does not satisfy requires-python {requires}"
    )


@pytest.mark.parametrize("path", ENV_FILES, ids=lambda p: p.name)
def test_env_pins_equal_pyproject(path):
    required = runtime_requirements()
    for name, version in env_pins(load_env(path)).items():
        if name not in required or version is None:
            continue
        spec = required[name].specifier
        exact = [s.version for s in spec if s.operator == "=="]
        if exact:
            assert version == exact[0], f"{path.name}: {name}=={version}, but pyproject.toml pins {name}=={exact[0]}"
        else:
            assert spec.contains(version), f"{path.name}: {name}=={version} does not satisfy pyproject's {spec}"


def test_envs_cover_every_runtime_dependency():
    provided = set().union(*(env_pins(load_env(p)) for p in ENV_FILES))
    missing = sorted(set(runtime_requirements()) - provided - DRIVER_ONLY)
    assert not missing, f"pyproject.toml dependencies that no environment installs: {missing}"


# ------------------------------------------------------------------------------------------------ the rules
def test_every_rule_has_a_pinned_conda_env_and_a_log():
    rules = action_rules()
    assert rules, "no rule with a script/shell action found in workflow/rules/*.smk"
    problems = []
    for smk, name, found in rules:
        if "run" in found:
            problems.append(f"{smk.name}: rule {name} uses run:, which cannot use a conda environment; use script:")
        if "log" not in found:
            problems.append(f"{smk.name}: rule {name} has no log: directive")
        if "conda" not in found:
            problems.append(f"{smk.name}: rule {name} has no conda: directive")
            continue
        env = (smk.parent / literal(found["conda"], smk, name, "conda")).resolve()
        if not env.is_file():
            problems.append(f"{smk.name}: rule {name}: conda env {env} does not exist (paths are relative to the .smk)")
        elif env.parent != ENV_DIR.resolve():
            problems.append(f"{smk.name}: rule {name}: conda env {env} is not one of envs/*.yaml")
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------------------------ imports of each rule
def _optional(handler_types: list[ast.expr]) -> bool:
    names = {n.id for t in handler_types for n in ast.walk(t) if isinstance(n, ast.Name)}
    return bool(names & {"ImportError", "ModuleNotFoundError"})


def _imports(tree: ast.AST, package_module: str | None) -> tuple[set[str], set[str]]:
    """(third-party top-level modules, gradbrain modules) imported anywhere outside try/except ImportError."""
    external: set[str] = set()
    internal: set[str] = set()

    def visit(node: ast.AST, optional: bool) -> None:
        if isinstance(node, ast.Try):
            guarded = _optional([h.type for h in node.handlers if h.type is not None])
            for child in node.body:
                visit(child, optional or guarded)
            for child in [*node.handlers, *node.orelse, *node.finalbody]:
                visit(child, optional)
            return
        if not optional:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    top = alias.name.split(".")[0]
                    (internal if top == "gradbrain" else external).add(alias.name if top == "gradbrain" else top)
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: inside the gradbrain package
                    base = "gradbrain" + (f".{node.module}" if node.module else "")
                    internal.add(base)
                    internal.update(f"{base}.{a.name}" for a in node.names)
                elif node.module and node.module.split(".")[0] == "gradbrain":
                    internal.add(node.module)
                    internal.update(f"{node.module}.{a.name}" for a in node.names)
                elif node.module:
                    external.add(node.module.split(".")[0])
        for child in ast.iter_child_nodes(node):
            visit(child, optional)

    visit(tree, False)
    return external, internal


def _module_file(module: str) -> Path | None:
    parts = module.split(".")[1:]
    for candidate in (LIBRARY.joinpath(*parts).with_suffix(".py"), LIBRARY.joinpath(*parts, "__init__.py")):
        if parts and candidate.is_file():
            return candidate
    return None


def script_imports(script: Path) -> set[str]:
    """Third-party modules a script needs, following its gradbrain imports transitively."""
    external, todo = _imports(ast.parse(script.read_text()), None)
    seen: set[Path] = set()
    while todo:
        path = _module_file(todo.pop())
        if path is None or path in seen:
            continue
        seen.add(path)
        ext, internal = _imports(ast.parse(path.read_text()), "gradbrain")
        external |= ext
        todo |= internal
    return {m for m in external if m not in sys.stdlib_module_names and m not in {"__future__", "snakemake"}}


def test_each_rule_env_provides_what_its_script_imports():
    problems = []
    for smk, name, found in action_rules():
        if "script" not in found or "conda" not in found:
            continue
        script = (smk.parent / literal(found["script"], smk, name, "script")).resolve()
        if script.suffix != ".py":
            continue
        assert script.is_file(), f"{smk.name}: rule {name}: script {script} does not exist"
        env_path = (smk.parent / literal(found["conda"], smk, name, "conda")).resolve()
        if not env_path.is_file():
            continue  # reported by test_every_rule_has_a_pinned_conda_env_and_a_log
        pins = env_pins(load_env(env_path))
        for module in sorted(script_imports(script)):
            providers = MODULE_DISTRIBUTIONS.get(module)
            if providers is None:
                problems.append(
                    f"{script.name} imports {module}: add it to MODULE_DISTRIBUTIONS in {Path(__file__).name}"
                )
            elif not any(normalise(p) in pins for p in providers):
                problems.append(
                    f"rule {name} ({smk.name}) runs in envs/{env_path.name}, which lacks {providers[0]} "
                    f"(imported as {module} by {script.name} or the gradbrain modules it uses)"
                )
    hint = (
        "Fix: pin the package in that env, point the rule's conda: at an env that has it, "
        "or guard the import with try/except ImportError."
    )
    assert not problems, "\n".join([*problems, hint])
