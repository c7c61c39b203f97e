"""The layout stays true: floors go one way, no import circles, small modules, small folders.

A small AST walk over the source (every import, at any depth, lazy ones included); no new dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("energymodel", "incremental")

#: the floors of each top-level package, lowest first; a package may import only from lower floors (or itself)
FLOORS = {
    "energymodel": [
        {"errors"},
        {"atomic", "defaults", "progress", "_imports"},
        {"models"},
        {"count"},
        {"memory"},
        {"price"},
        {"analysis"},
        {"referee"},
        {"report"},
        {"api"},
        {"cli"},
        {"__main__"},
    ],
    "incremental": [
        {"data"},
        {"model"},
        {"train"},
        {"agnostic", "search"},
        {"evaluation"},
        {"run"},
        {"report"},
        {"cli"},
        {"__main__"},
    ],
}
MAX_LINES = 450
MAX_MODULES = 12


def _modules() -> dict[str, Path]:
    out = {}
    for top in PACKAGES:
        for path in (ROOT / top).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every project module ``name`` imports (``from P import x`` where ``P.x`` is a module counts as ``P.x``)."""
    is_pkg = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] in PACKAGES)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] not in PACKAGES:
                continue
            for a in node.names:
                full = f"{target}.{a.name}"
                out.add(full if full in MODULES else target)
    return {m for m in out if m != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _room(module: str) -> tuple[str, str]:
    """``(top-level package, room)``: the sub-package, or the module itself at the top level."""
    parts = module.split(".")
    if len(parts) == 1:
        return parts[0], "__init__"
    return parts[0], parts[1]


def _floor(module: str) -> int:
    top, room = _room(module)
    if module == top:
        return len(FLOORS[top])  # the package root: its lazy exports may name any module
    for i, rooms in enumerate(FLOORS[top]):
        if room in rooms:
            return i
    raise AssertionError(f"{module}: room {room!r} of {top} has no floor in tests/test_architecture.py FLOORS")


def test_every_room_has_a_floor() -> None:
    for name in MODULES:
        _floor(name)


def test_energymodel_never_imports_incremental() -> None:
    bad = [(m, t) for m, ts in GRAPH.items() if m.startswith("energymodel") for t in ts if t.startswith("incremental")]
    assert not bad


def test_no_upward_import() -> None:
    """A module imports only from its own room or from rooms on lower floors (``incremental`` may use any of
    ``energymodel``; the package roots' lazy re-export tables are strings, not imports)."""
    bad = []
    for m, targets in GRAPH.items():
        for t in targets:
            if _room(m)[0] != _room(t)[0]:
                continue  # incremental -> energymodel (the reverse is the test above)
            if _room(m) == _room(t) or t in PACKAGES:
                continue  # its own room; the package root (``__version__``) is loaded before any module of it
            if _floor(t) >= _floor(m):
                bad.append(f"{m} -> {t}")
    assert not bad, "imports that go up or sideways:\n" + "\n".join(sorted(bad))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circles() -> None:
    """No two modules import each other, directly or through others (lazy imports inside functions count)."""
    assert _cycles(GRAPH) == []


def test_the_cycle_finder_finds_cycles() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("top", PACKAGES)
def test_small_modules_and_folders(top: str) -> None:
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / top).rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"
    crowded = {}
    for folder in {p.parent for p in (ROOT / top).rglob("*.py")}:
        n = sum(1 for p in folder.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
        if n > MAX_MODULES:
            crowded[str(folder.relative_to(ROOT))] = n
    assert not crowded, f"folders with more than {MAX_MODULES} modules: {crowded}"


def test_every_package_says_what_it_holds() -> None:
    """Each sub-package's ``__init__`` has a docstring that says what it holds and what it may import."""
    missing = []
    for init in list((ROOT / "energymodel").glob("*/__init__.py")) + list((ROOT / "incremental").glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        if len(doc.splitlines()) < 3 or "import" not in doc:
            missing.append(str(init.relative_to(ROOT)))
    assert not missing


def _moved() -> dict[str, str]:
    import energymodel
    import incremental

    return {**energymodel._MOVED, **incremental._MOVED}


def test_every_moved_path_names_a_module_that_exists_and_no_file_is_left_at_the_old_one() -> None:
    import importlib

    for old, new in _moved().items():
        assert importlib.util.find_spec(new) is not None, new
        assert not (ROOT / (old.replace(".", "/") + ".py")).exists(), old


@pytest.mark.parametrize(("old", "new"), [("energymodel.sharing", "energymodel.analysis.sharing"),
                                          ("energymodel.zoo", "energymodel.models.zoo"),
                                          ("incremental.branching", "incremental.model.branching")])
def test_an_old_module_path_works_for_one_release_with_a_deprecation_warning(old: str, new: str) -> None:
    import importlib
    import sys

    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} is now {new}"):
        mod = importlib.import_module(old)
    assert mod is importlib.import_module(new)
