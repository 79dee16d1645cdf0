"""The architecture of docs/ARCHITECTURE.md, enforced: import directions and private access.

Both checks parse the source with `ast` (nothing is imported), so they see every import,
including those under `if TYPE_CHECKING:` and inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mmsample"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path) -> set[str]:
    """Absolute names of the modules `path` imports (`from x import y` counts as x and x.y)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            out.add(stem)
            out.update(f"{stem}.{alias.name}" for alias in node.names)
    return out


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


SCHEDULE = ("mmsample.schedule",)
READERS = ("mmsample.shards",)
DECODING = ("mmsample.decoding",)
SHARDING = ("mmsample.sharding",)
METHODS = ("mmsample.methods",)
LOADER = ("mmsample.loader",)
SIGNALS = ("mmsample.signals",)
STORAGE = ("mmsample.storage",)

# (who, may not import, why): the directions docs/ARCHITECTURE.md draws
RULES = [
    (SCHEDULE, ("mmsample",), "the schedule is pure: it may import only mmsample.plan"),
    (SCHEDULE, ("torch.utils.data",), "the schedule knows no DataLoader"),
    (DECODING, LOADER + METHODS, "decoding knows nothing of loading or balancing"),
    (READERS, LOADER + METHODS, "readers read and decode; the loader drives them"),
    (METHODS, READERS + SHARDING, "methods plan from the ledger, never from shards"),
    (READERS, SHARDING, "readers read shards; writing them is the sharding tool's job"),
    (DECODING, SHARDING, "decoding turns bytes into tensors; it knows nothing of writing shards"),
    (DECODING, READERS, "decoding is handed bytes; the readers call it, never the reverse"),
    (SIGNALS, ("mmsample",), "signals are pure tensor functions: they import only mmsample.errors"),
    (
        STORAGE,
        ("mmsample",),
        "storage moves bytes: it knows nothing of shards, decoding or loading",
    ),
]
ALLOWED = {
    "mmsample.schedule": ("mmsample.plan", "mmsample.schedule"),
    "mmsample.signals": ("mmsample.signals", "mmsample.errors"),
    "mmsample.storage": ("mmsample.storage", "mmsample.errors"),
}


def test_import_directions() -> None:
    wrong = []
    for name, path in modules().items():
        for who, banned, why in RULES:
            if not _within(name, who):
                continue
            allowed = next((v for k, v in ALLOWED.items() if _within(name, (k,))), ())
            for target in sorted(imports_of(name, path)):
                if _within(target, banned) and not _within(target, allowed):
                    wrong.append(f"{name} imports {target}: {why}")
    assert not wrong, "\n".join(wrong)


def test_the_rules_see_a_wrong_import(tmp_path: Path) -> None:
    """The parser resolves relative imports: a schedule module importing the loader is caught."""
    fake = PACKAGE / "schedule" / "items.py"
    found = imports_of("mmsample.schedule.items", fake)
    assert "mmsample.plan" in found and "mmsample.schedule.order" in found
    probe = tmp_path / "probe.py"
    probe.write_text("from ..loader import dataset\nfrom . import seeds\n")
    got = imports_of("mmsample.schedule.probe", probe)
    assert {"mmsample.loader", "mmsample.loader.dataset", "mmsample.schedule.seeds"} <= got


# Private attributes of objects that are not mmsample's (third-party internals we must touch),
# as (module, attribute): why.
THIRD_PARTY_PRIVATE = {
    ("mmsample.loader.loader", "_shutdown_workers"): "torch's DataLoader iterator: restart "
    "persistent workers when a plan outgrew the shared buffers",
}


def _defined_private(tree: ast.AST) -> set[str]:
    """Private names a module defines: functions, classes, attributes assigned on any object
    (`self._x = ...`), class and module assignments."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {n for n in names if n.startswith("_")}


def _third_party_roots(tree: ast.AST) -> set[str]:
    """Local names bound to modules outside mmsample (`import torch`, `from torch import nn`)."""
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if not alias.name.startswith("mmsample"):
                    roots.add((alias.asname or alias.name).split(".")[0])
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and not (node.module or "").startswith("mmsample")
        ):
            roots.update(alias.asname or alias.name for alias in node.names)
    return roots


def private_reads(name: str, path: Path) -> list[str]:
    """`obj._attr` (and `getattr(obj, "_attr")`) on an object other than self/cls whose
    attribute this module does not define and that is not a third-party module's."""
    tree = ast.parse(path.read_text())
    mine, third = _defined_private(tree), _third_party_roots(tree)
    found = []
    for node in ast.walk(tree):
        attr, base = None, None
        if isinstance(node, ast.Attribute):
            attr, base = node.attr, node.value
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr", "setattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            attr, base = node.args[1].value, node.args[0]
        if attr is None or base is None or not attr.startswith("_") or attr.endswith("__"):
            continue
        root = base
        while isinstance(root, ast.Attribute | ast.Call | ast.Subscript):
            root = root.value if not isinstance(root, ast.Call) else root.func
        if isinstance(root, ast.Name) and root.id in ("self", "cls") and base is root:
            continue
        if attr in mine or (isinstance(root, ast.Name) and root.id in third):
            continue
        if (name, attr) in THIRD_PARTY_PRIVATE:
            continue
        found.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
    return found


@pytest.mark.parametrize("tree", ["mmsample", "pipelines", "tools"])
def test_no_private_access_across_modules(tree: str) -> None:
    wrong = []
    for path in sorted((ROOT / tree).rglob("*.py")):
        wrong += private_reads(module_name(path), path)
    assert not wrong, "private attributes read across modules:\n" + "\n".join(wrong)


def test_the_private_check_sees_a_cross_module_read(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import torch\n"
        "class A:\n"
        "    def __init__(self):\n"
        "        self._mine = 1\n"
        "    def f(self, other, reader):\n"
        "        torch._C\n"  # a third-party module's: allowed
        "        other._mine\n"  # defined in this module: allowed
        "        reader._consumer\n"  # another module's private: caught
        "        return getattr(reader, '_taken', None)\n"  # caught through getattr too
    )
    got = private_reads("mmsample.probe", probe)
    assert [g.split(": ", 1)[1] for g in got] == [
        "reader._consumer",
        "getattr(reader, '_taken', None)",
    ]


# Where an epoch may be kept: the loader decides and advances it; the Ledger stamps observations
# with the epoch it was handed and a method remembers the epoch it took (`taken`).
EPOCH_HOLDERS = ("mmsample.loader", "mmsample.ledger", "mmsample.methods")


def stored_epochs(name: str, path: Path) -> list[str]:
    """Attributes named like an epoch (`epoch`, `_epoch`, `current_epoch`; not `epochs`, a
    count) assigned on an object in `path`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            word = node.attr.strip("_")
            if word == "epoch" or word.endswith("_epoch") or word.startswith("epoch_"):
                found.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_epoch_is_stored_outside_the_loader() -> None:
    wrong = []
    for name, path in modules().items():
        if not _within(name, EPOCH_HOLDERS):
            wrong += stored_epochs(name, path)
    assert not wrong, "an epoch stored outside the loader:\n" + "\n".join(wrong)
    loader = [s for n, p in modules().items() if _within(n, LOADER) for s in stored_epochs(n, p)]
    assert loader, "the check finds the loader's own epoch (else it checks nothing)"
