"""The library's modules import each other in one direction only: no import cycle, at any depth.

Every ``import`` counts, at the top of a module or inside a function (a cycle hidden in a function is
still one module reaching up into another that needs it).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "llambert"


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _owner(name: str) -> str | None:
    """The project module an imported name lives in (``llambert.tasks.Task`` -> ``llambert.tasks``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> set[str]:
    """The project modules ``module`` imports, anywhere in its code."""
    path = MODULES[module]
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {_owner(a.name) for a in node.names if a.name.split(".")[0] == "llambert"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            if base.split(".")[0] == "llambert":
                for a in node.names:  # `from llambert.student import base` names a module
                    full = f"{base}.{a.name}"
                    found.add(full if full in MODULES else _owner(base))
    return found - {None, module}


def import_graph() -> dict[str, set[str]]:
    return {m: imports_of(m) for m in MODULES}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_finder_sees_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    # and it reads imports as they are written: absolute, relative, inside functions
    assert "llambert.config" in imports_of("llambert.preflight")
    assert "llambert.warehouse" in imports_of("llambert.teacher.accounting")
    assert "llambert.student.base" in imports_of("llambert.student.linear")


def test_llambert_has_no_import_cycle():
    found = cycles(import_graph())
    assert found == [], "import cycles in llambert/ (move the shared code below both): " + "; ".join(
        " <-> ".join(c) for c in found
    )


def test_config_is_the_floor():
    """config is read by everything, so it imports nothing of the project (preflight sits above it)."""
    assert imports_of("llambert.config") <= {"llambert.models.registry"}
    assert "llambert.pipeline" not in imports_of("llambert.teacher.accounting")
