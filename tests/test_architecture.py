"""The package's layering: imports point down, never in a circle, never at another module's private names.

Every import counts, at the top of a module or inside a function (a late import still ties
the two modules together), except those under ``if TYPE_CHECKING:``, which never run.
Importing ``a.b.c`` also runs the ``__init__`` of ``a.b``: an import of a module outside the
importer's own packages adds an edge to each of the target's packages as well.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from syft_mpc.deprecated import MOVED

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "syft_mpc"
ROOT = "syft_mpc"


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement that can run (``if TYPE_CHECKING:`` bodies left out)."""
    out: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return out


def _imports(name: str, path: Path) -> list[tuple[str, str | None]]:
    """(imported module, imported name or None) for each import of a syft_mpc module in ``name``."""
    is_pkg = path.name == "__init__.py"
    found: list[tuple[str, str | None]] = []
    for node in _import_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, None) for a in node.names if a.name.split(".")[0] == ROOT]
            continue
        base = node.module or ""
        if node.level:
            pkg = name.split(".") if is_pkg else name.split(".")[:-1]
            pkg = pkg[: len(pkg) - (node.level - 1)]
            base = ".".join(pkg + ([node.module] if node.module else []))
        if base.split(".")[0] != ROOT:
            continue
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            found.append((sub, None) if sub in MODULES or alias.name == "_native" else (base, alias.name))
    return found


def _packages(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for name, path in MODULES.items():
        own = set(_packages(name)) | {name}
        for target, _ in _imports(name, path):
            if target not in MODULES:
                continue
            for t in [*_packages(target), target]:
                if t not in own:
                    graph[name].add(t)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
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
                cycles.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph)))
    for v in sorted(graph):
        if v not in index:
            connect(v)
    return cycles


def test_no_import_cycles() -> None:
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles (break them by moving code down a layer, not by importing late):\n" + "\n".join(
        " <-> ".join(c) for c in cycles
    )


def test_no_private_names_across_modules() -> None:
    bad = [
        f"{name} imports {mod}.{imported}"
        for name, path in MODULES.items()
        for mod, imported in _imports(name, path)
        if imported is not None and imported.startswith("_") and not imported.startswith("__") and mod != name
    ]
    assert not bad, "private names used across modules (make them public or move the code):\n" + "\n".join(bad)


DEPRECATED = MOVED


def test_nothing_in_the_package_imports_a_deprecated_path() -> None:
    bad = [f"{name} imports {mod}" for name, path in MODULES.items() for mod, _ in _imports(name, path) if mod in DEPRECATED]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("old", sorted(DEPRECATED))
def test_old_module_paths_still_work_and_warn(old: str) -> None:
    # In a fresh interpreter: the alias must be the new module itself, and say so once.
    code = (
        "import importlib, warnings\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        f"    old = importlib.import_module({old!r})\n"
        f"assert old is importlib.import_module({DEPRECATED[old]!r}), old\n"
        "assert any(issubclass(x.category, DeprecationWarning) and 'moved to' in str(x.message) for x in w), w\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_the_graph_sees_a_cycle(tmp_path: Path) -> None:
    # The checker itself: a late import in a function still closes a circle.
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c"]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        src = "def f():\n    from syft_mpc.remote import workers\nif TYPE_CHECKING:\n    from syft_mpc import hook\n"
        tree = ast.parse(src)
    names = [n.module for n in _import_nodes(tree) if isinstance(n, ast.ImportFrom)]
    assert names == ["syft_mpc.remote"]
