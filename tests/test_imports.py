"""Static checks of the package layout: no import cycles between jaxdl modules, no oversized modules.

The module graph is built from the source with ``ast`` (nothing is imported): every ``import jaxdl…`` and
``from jaxdl… import …`` statement counts, at module level *and* inside functions (a lazy import is still an edge of
the design's layer graph). Imports under ``if TYPE_CHECKING:`` never run and are not counted. A package's own
``__init__`` is an ordinary node: ``from jaxdl.models import ModelSpec`` is an edge to ``jaxdl.models``, while
``from jaxdl import config`` is an edge to the submodule ``jaxdl.config``. The implicit import of a parent package
that Python performs before a submodule is not an edge (``jaxdl/__init__.py`` importing ``jaxdl.models`` is how the
model-config registry gets filled; see ``jaxdl.config``).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "jaxdl"
MAX_LINES = 600


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST):
    """Every Import/ImportFrom node, at any depth, except those guarded by ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of dotted ``name`` that is a jaxdl module."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        candidate = ".".join(parts[:i])
        if candidate in modules:
            return candidate
    return None


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        is_pkg = path.name == "__init__.py"
        package = mod if is_pkg else mod.rpartition(".")[0]
        for node in _import_nodes(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:
                    base_parts = package.split(".")
                    base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                    base = ".".join(base_parts + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                # `from pkg import name`: an edge to pkg.name when that is a module, else to pkg itself
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            for t in targets:
                if t == "jaxdl" or t.startswith("jaxdl."):
                    target = _resolve(t, modules)
                    if target is not None and target != mod:
                        graph[mod].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or None."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = {m: WHITE for m in graph}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        colour[m] = GREY
        stack.append(m)
        for n in sorted(graph[m]):
            if colour[n] == GREY:
                return stack[stack.index(n):] + [n]
            if colour[n] == WHITE:
                found = visit(n)
                if found:
                    return found
        stack.pop()
        colour[m] = BLACK
        return None

    for m in sorted(graph):
        if colour[m] == WHITE:
            found = visit(m)
            if found:
                return found
    return None


def test_graph_sees_function_level_and_relative_imports(tmp_path):
    # the checker itself: a lazy import inside a function is an edge
    graph = import_graph()
    assert "jaxdl.errors" in graph["jaxdl.config"]
    assert "jaxdl.config" in graph["jaxdl.train.rundir"]  # `from jaxdl import config as config_lib`
    cyclic = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(cyclic) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    graph = import_graph()
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_model_configs_resolve_without_importing_models_first():
    """The config layer never imports jaxdl.models; the registry is filled because importing any jaxdl submodule
    runs jaxdl/__init__.py, which imports jaxdl.models (run in a fresh interpreter)."""
    import subprocess
    import sys

    code = ("from jaxdl.config import model_config_class, Config; "
            "assert model_config_class('mlp').__name__ == 'MLPConfig'; print(Config().model.name)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "mlp"


def test_no_module_over_600_lines():
    """DESIGN.md §3: no module over ~600 lines.

    EXPECTED FAILURE while jaxdl/train/loop.py (1,000+ lines) is being split by another change; this test checks
    every module, loop.py included, and passes once that split lands. Do not exempt loop.py here."""
    too_long = {str(p.relative_to(PACKAGE.parent)): n for p in _modules().values()
                if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not too_long, f"modules over {MAX_LINES} lines: {too_long}"
