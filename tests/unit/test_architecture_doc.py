"""ARCHITECTURE.md's walk through one GRPO step names real files and functions, in fewer than ten files."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = re.compile(r"`([\w/]+\.py):([\w.]+)`")


def _defined(path: Path) -> set[str]:
    """Dotted names defined at module level and inside classes (Class, Class.method, function)."""
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names.add(node.name)
            names.update(
                f"{node.name}.{item.name}"
                for item in node.body
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
            )
    return names


def test_every_named_function_exists_and_the_walk_stays_under_ten_files():
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    references = REFERENCE.findall(text)
    assert len(references) >= 10
    missing = [f"{file}:{name}" for file, name in references if name not in _defined(ROOT / file)]
    assert missing == []
    assert len({file for file, _ in references}) < 10


def test_a_stale_reference_would_be_caught(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("class A:\n    def b(self):\n        pass\n\ndef c():\n    pass\n")
    assert _defined(module) == {"A", "A.b", "c"}
