"""The layout holds: no import circles anywhere, and the shared core (`mtr`) never imports the services above it.

Read with the standard library's `ast`, every import counts, at module level or inside a function, and so does
`importlib.import_module("literal")`: a lazy import is still a dependency (it only hides a circle until the
day the function runs first).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("mtr", "controller", "simulator", "rollout", "learner")
GENERATED = ("mtr/v1",)


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            relative = path.relative_to(ROOT)
            if any(str(relative).startswith(g) for g in GENERATED):
                continue
            parts = list(relative.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _imports(path: Path, known: dict[str, Path]) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value)
    return {name for name in names if name in known}


def import_graph() -> dict[str, set[str]]:
    known = _modules()
    return {name: _imports(path, known) - {name} for name, path in known.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every elementary circle, each reported once from its smallest module name."""
    found = []

    def walk(start: str, node: str, path: list[str]) -> None:
        for following in sorted(graph[node]):
            if following == start:
                found.append([*path, start])
            elif following not in path and following > start:
                walk(start, following, [*path, following])

    for start in sorted(graph):
        walk(start, start, [start])
    return found


def test_no_import_circles():
    assert circles(import_graph()) == []


def test_the_core_never_imports_the_services_above_it():
    upward = {
        name: sorted(d for d in deps if d.split(".")[0] != "mtr")
        for name, deps in import_graph().items()
        if name.split(".")[0] == "mtr"
    }
    assert {name: deps for name, deps in upward.items() if deps} == {}


def test_the_checks_can_fail():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert circles(graph) == [["a", "b", "c", "a"]]


def test_test_modules_have_unique_basenames():
    """pytest imports test files by basename (no packages under tests/): two of a name break collection."""
    names = [path.name for path in (ROOT / "tests").rglob("test_*.py")]
    assert sorted({n for n in names if names.count(n) > 1}) == []
