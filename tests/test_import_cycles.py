"""No import cycles between mmsample's modules, checked on the source with `ast`.

A cycle makes a module's names depend on which module of the cycle a program happens to import
first, and it ties two concepts together that the layout keeps apart (decoding once imported
the media probe, which imported decoding back). Nothing is imported here: every module is
parsed, its imports resolved to mmsample modules (relative ones too, `from . import x` naming a
submodule counts as that submodule), and the graph searched for a cycle. Importing `a.b.c`
also runs the `__init__` of `a.b`, so that package counts as imported too, except where it
encloses the importer as well (it has then run already).

Two graphs: the imports a module runs when it is imported (module level, outside
`if TYPE_CHECKING:`), and the same plus the deferred imports inside functions, so that a lazy
import does not hide a cycle between two concepts.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mmsample"


def module_names(package: Path) -> dict[str, Path]:
    """Dotted name -> path of every module under `package` (a package is its `__init__`)."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.stmt) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_nodes(tree: ast.Module, deferred: bool) -> list[ast.Import | ast.ImportFrom]:
    """The import statements of a module: those run at import time (module level, inside
    if/try/with blocks too, but not under `if TYPE_CHECKING:`), plus those inside functions
    and classes if `deferred`."""
    found: list[ast.Import | ast.ImportFrom] = []
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            if deferred:
                stack.extend(ast.iter_child_nodes(node))
        elif isinstance(node, ast.stmt):
            stack.extend(ast.iter_child_nodes(node))
    return found


def _packages(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def imports_of(name: str, path: Path, known: set[str], deferred: bool = False) -> set[str]:
    """The modules of `known` that importing module `name` (file `path`) imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in import_nodes(ast.parse(path.read_text()), deferred):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
            continue
        if node.level:
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            stem = ".".join(base + ([node.module] if node.module else []))
        else:
            stem = node.module or ""
        for alias in node.names:
            sub = f"{stem}.{alias.name}"
            targets.add(sub if sub in known else stem)
    mine = set(_packages(name))
    out: set[str] = set()
    for target in targets:
        if target not in known:
            continue
        out.add(target)
        out.update(p for p in _packages(target) if p in known and p not in mine)
    out.discard(name)
    return out


def import_graph(package: Path, deferred: bool = False) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports."""
    names = module_names(package)
    known = set(names)
    return {n: imports_of(n, p, known, deferred) for n, p in names.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    for start in sorted(graph):
        if state.get(start):
            continue
        path, iters = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while path:
            nxt = next(iters[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                iters.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                iters.append(iter(sorted(graph.get(nxt, ()))))
    return None


@pytest.mark.parametrize("deferred", [False, True], ids=["module-level", "with-deferred"])
def test_no_import_cycle(deferred: bool) -> None:
    graph = import_graph(PACKAGE, deferred)
    assert len(graph) > 50 and sum(map(len, graph.values())) > 100  # it sees the package
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / "pkg" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_the_check_sees_a_cycle(tmp_path: Path) -> None:
    """Relative, absolute and `from . import x` imports, and a package's `__init__`, all count;
    `if TYPE_CHECKING:` imports do not; a function's import counts only as deferred."""
    pkg = _write(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "from .b import f\n",
            "b.py": "from . import c\n",
            "c.py": "import pkg.a\n",
            "d/__init__.py": "from .e import g\n",
            "d/e.py": "g = 1\n",
            "h.py": "from pkg.d.e import g\n",
            "typed.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import late\n",
            "late.py": "def f():\n    from . import typed\n",
        },
    )
    graph = import_graph(pkg)
    assert graph["pkg.b"] == {"pkg.c"} and graph["pkg.h"] == {"pkg.d", "pkg.d.e"}
    assert graph["pkg.d.e"] == set() and graph["pkg.typed"] == set()
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.c", "pkg.a"]
    (pkg / "c.py").write_text("")
    assert find_cycle(import_graph(pkg)) is None
    (pkg / "typed.py").write_text("from . import late\n")
    assert find_cycle(import_graph(pkg)) is None  # late imports typed only inside a function
    assert find_cycle(import_graph(pkg, deferred=True)) == ["pkg.late", "pkg.typed", "pkg.late"]
    (pkg / "d" / "e.py").write_text("from pkg.h import x\n")
    assert find_cycle(import_graph(pkg)) == ["pkg.d", "pkg.d.e", "pkg.h", "pkg.d"]
