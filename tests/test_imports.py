"""The package's import graph has no cycles, lazy imports included.

A function-level import that only keeps two modules from importing each other at load
time hides a cycle; so the graph below counts every ``import`` in a module, wherever it
is, except those under ``if TYPE_CHECKING:`` (never executed). Importing ``a.b.c`` also
runs the package ``a.b``'s ``__init__``, so a subpackage counts as imported too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import deepmc

PACKAGE = Path(deepmc.__file__).resolve().parent


def _modules() -> dict[str, tuple[Path, bool]]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for child in node.body for n in ast.walk(child))
    return skipped


def _targets(
    module: str, is_package: bool, node: ast.Import | ast.ImportFrom, known: set[str]
) -> set[str]:
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = module.split(".") if is_package else module.split(".")[:-1]
        if node.level:
            base = base[: len(base) - node.level + 1]
        else:
            base = []
        target = ".".join(base + ([node.module] if node.module else []))
        names = [target] + [f"{target}.{alias.name}" for alias in node.names]
    out = set()
    for name in names:
        parts = name.split(".")
        # the module itself and every package above it but the root, whose __init__
        # every submodule import finds already running
        for k in range(2, len(parts) + 1):
            if ".".join(parts[:k]) in known:
                out.add(".".join(parts[:k]))
    return out


def import_graph() -> dict[str, set[str]]:
    """Module → the deepmc modules it imports (anywhere but under TYPE_CHECKING)."""
    modules = _modules()
    known = set(modules)
    graph = {}
    for module, (path, is_package) in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skipped = _type_checking_nodes(tree)
        edges = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in skipped:
                edges |= _targets(module, is_package, node, known)
        edges.discard(module)
        # a package's __init__ importing its own submodules is how packages load
        if is_package:
            edges = {e for e in edges if not e.startswith(module + ".")}
        graph[module] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path ``[a, b, …, a]``, or ``None``."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_lazy_imports_and_parent_packages():
    graph = import_graph()
    # deepmc.__main__ imports the command line's modules inside functions
    assert "deepmc.compare" in graph["deepmc.__main__"]
    # a module of deepmc.models imported by name brings in the package deepmc.models
    node = ast.parse("from ..models._compressed_step import CompressedWorkspace").body[0]
    targets = _targets("deepmc.distributed._network", False, node, set(graph))
    assert {"deepmc.models", "deepmc.models._compressed_step"} <= targets


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.slow
@pytest.mark.parametrize(
    "module",
    [
        "deepmc.plotting",
        "deepmc.compare._plots",
        "deepmc.distributed._model_io",
        "deepmc.models._network",
        "deepmc._solver",
        "deepmc._trace",
    ],
)
def test_module_imports_first_in_a_fresh_interpreter(module):
    # Modules once kept apart by lazy imports, each imported first in its own process.
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
