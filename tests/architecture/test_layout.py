"""The package layout of docs/architecture.md holds: imports go one way between packages, no module imports itself
round a cycle, no module is over about 400 lines, and the docs name only files that exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from helpers import REPO

LIBRARY = REPO / "workflow" / "gradbrain"
ORDER = ("gradbrain", "store", "logs", "config", "stats", "data", "models", "features", "simulation", "encoding",
         "hierarchy", "power", "report", "jobsize")  # fmt: skip
"""The one-way order of docs/architecture.md: a package imports only from packages before it ("gradbrain" is the
root package's own ``__init__``)."""
MAX_LINES = 420
GENERATED = ("benchmarks/out", "benchmarks/.wheels", "tests/artefacts")
"""Folders the benchmarks and tests write (ignored by git): references to them name outputs, not sources."""


def module_name(path: Path) -> str:
    parts = path.relative_to(LIBRARY.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(LIBRARY.rglob("*.py"))}


def resolve(name: str, known: dict[str, Path]) -> str | None:
    """The module an import refers to: the longest known prefix of the dotted name."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in known:
            return candidate
    return None


def import_graph() -> dict[str, set[str]]:
    """Module -> the gradbrain modules it imports anywhere (top level or inside functions)."""
    known = modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for imported in names:
                if imported.split(".")[0] == "gradbrain":
                    target = resolve(imported, known)
                    if target and target != name:
                        targets.add(target)
        graph[name] = targets
    return graph


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "gradbrain"


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_inside_gradbrain():
    found = cycles(import_graph())
    assert not found, f"import cycles: {found}"


def test_the_cycle_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_packages_import_only_earlier_packages():
    wrong = []
    for module, targets in import_graph().items():
        here = package_of(module)
        assert here in ORDER, f"{module}: package {here!r} is not in the documented order {ORDER}"
        for target in targets:
            there = package_of(target)
            if there != here and ORDER.index(there) > ORDER.index(here):
                wrong.append(f"{module} imports {target} ({there} comes after {here})")
    assert not wrong, "\n".join(wrong)


def test_architecture_doc_lists_the_order():
    doc = (REPO / "docs" / "architecture.md").read_text().split("## The one-way order", 1)[1].split("\n## ", 1)[0]
    positions = [doc.find(f"`{name}`") for name in ORDER[1:]]
    assert -1 not in positions, [n for n, p in zip(ORDER[1:], positions, strict=True) if p == -1]
    assert positions == sorted(positions), "docs/architecture.md lists the packages out of their import order"


@pytest.mark.parametrize("path", sorted(LIBRARY.rglob("*.py")), ids=lambda p: str(p.relative_to(LIBRARY)))
def test_no_module_over_about_400_lines(path):
    assert len(path.read_text().splitlines()) <= MAX_LINES, f"{path.relative_to(REPO)}: split it by job"


def test_references_name_files_in_the_repository():
    """Every `docs/...`, `benchmarks/...` or `*.md` file a module, rule, test, doc or config cites exists."""
    pattern = re.compile(r"(?<![\w/.-])((?:docs|benchmarks|config|resources|workflow|tests)/[\w./-]*\w|[\w-]+\.md)\b")
    sources = [*(REPO / "workflow").rglob("*.py"), *(REPO / "workflow").rglob("*.smk"), *(REPO / "tests").rglob("*.py"),
               *(REPO / "docs").glob("*.md"), *(REPO / "config").rglob("*"), REPO / "README.md", REPO / "Snakefile",
               *(REPO / "benchmarks").glob("*.py")]  # fmt: skip
    missing = set()
    for source in sources:
        if not source.is_file():
            continue
        for ref in pattern.findall(source.read_text()):
            if ref.endswith(".md") and "/" not in ref:
                found = list(REPO.glob(f"**/{ref}"))
                if not [p for p in found if ".venv" not in p.parts]:
                    missing.add(f"{source.relative_to(REPO)}: {ref}")
            elif not (REPO / ref).exists() and not ref.startswith(GENERATED) and not any(c in ref for c in "{}*<>"):
                missing.add(f"{source.relative_to(REPO)}: {ref}")
    assert not missing, "\n".join(sorted(missing))


def test_metrics_doc_names_functions_that_exist():
    """docs/metrics.md names where each metric is computed: every `package.module.name` it gives resolves."""
    import importlib

    import yaml

    text = (REPO / "docs" / "metrics.md").read_text()
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())

    def keys(node: dict, prefix: str) -> set[str]:
        out = set()
        for key, child in node.get("properties", {}).items():
            out |= {f"{prefix}{key}"} | keys(child, f"{prefix}{key}.")
        return out

    config_keys = keys(schema, "")
    packages = "|".join(p for p in ORDER if p != "gradbrain")
    missing = []
    for ref in sorted(set(re.findall(rf"`((?:{packages})\.[A-Za-z_][\w.]*)`", text)) - config_keys):
        parts = ref.split(".")
        for cut in range(len(parts), 0, -1):
            try:
                obj = importlib.import_module("gradbrain." + ".".join(parts[:cut]))
            except ModuleNotFoundError:
                continue
            try:
                for attr in parts[cut:]:
                    obj = getattr(obj, attr)
            except AttributeError:
                missing.append(ref)
            break
        else:
            missing.append(ref)
    assert not missing, f"docs/metrics.md names what does not exist: {missing}"
