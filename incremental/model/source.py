"""The model's source closure: every file whose code builds the network, and the SHA-256 of each.

A run records it in ``run.json`` (:func:`model_source_hash`); resuming with code that changed is refused,
naming the files (:func:`source_changes`). The closure starts at the file that defines the model's factory
(a zoo model: its zoo module) and follows its imports, transitively: every module that is not part of the
Python installation (standard library, ``site-packages``) - the user's own modules and this project's - is
in it. Imports are read from the source (:mod:`ast`, imports inside functions included); nothing is
imported to find them, beyond what ``importlib.util.find_spec`` does for a top-level name.

Not covered: code reached other than by an ``import`` statement (``importlib.import_module`` with a computed
name, ``exec``), and installed packages (their versions are recorded in ``versions``).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.machinery
import importlib.util
import inspect
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["model_source_hash", "source_changes", "source_closure", "MAX_FILES"]

#: the most files a closure holds (a model that reaches more stops there; the first ones are the nearest)
MAX_FILES = 400


def _installed_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {paths.get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    roots |= {str(Path(sys.base_prefix) / "lib"), str(Path(sys.prefix) / "lib")}
    return tuple(str(Path(r).resolve()) for r in roots if r)


def _module_files(name: str) -> list[Path]:
    """The ``.py`` files of module ``name`` and of the packages above it (found, not imported)."""
    parts = name.split(".")
    files: list[Path] = []
    try:
        spec = importlib.util.find_spec(parts[0])
    except (ImportError, ValueError, AttributeError):
        return files
    for i in range(len(parts)):
        if spec is None:
            break
        if spec.origin and spec.origin.endswith(".py"):
            files.append(Path(spec.origin))
        locations = spec.submodule_search_locations
        if i + 1 == len(parts) or locations is None:
            break
        spec = importlib.machinery.PathFinder.find_spec(parts[i + 1], list(locations))
    return files


def _relative_files(origin: Path, level: int, module: str | None, names: list[str]) -> list[Path]:
    """Files of ``from <level dots><module> import <names>`` in ``origin`` (found by folder)."""
    folder = origin.parent
    for _ in range(level - 1):
        folder = folder.parent
    parts = module.split(".") if module else []
    files: list[Path] = []
    locations = [str(folder)]
    for part in parts:
        spec = importlib.machinery.PathFinder.find_spec(part, locations)
        if spec is None:
            return files
        if spec.origin and spec.origin.endswith(".py"):
            files.append(Path(spec.origin))
        if spec.submodule_search_locations is None:
            return files
        locations = list(spec.submodule_search_locations)
    for n in names:
        spec = importlib.machinery.PathFinder.find_spec(n, locations)
        if spec is not None and spec.origin and spec.origin.endswith(".py"):
            files.append(Path(spec.origin))
    return files


def _imported_files(path: Path) -> Iterator[Path]:
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (OSError, SyntaxError, ValueError, RecursionError):
        return
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield from _module_files(alias.name)
        elif isinstance(node, ast.ImportFrom):
            names = [a.name for a in node.names if a.name != "*"]
            if node.level:
                yield from _relative_files(path, node.level, node.module, names)
            elif node.module:
                yield from _module_files(node.module)
                for n in names:  # ``from pkg import module``
                    yield from _module_files(f"{node.module}.{n}")


def source_closure(start: str | Path) -> list[Path]:
    """``start`` and every project file it imports, transitively (see the module docstring), nearest first."""
    roots = _installed_roots()
    first = Path(start).resolve()
    seen: dict[Path, None] = {first: None}
    queue = [first]
    while queue and len(seen) < MAX_FILES:
        for found in _imported_files(queue.pop(0)):
            try:
                found = found.resolve()
            except OSError:
                continue
            if found in seen or str(found).startswith(roots) or not found.is_file():
                continue
            seen[found] = None
            queue.append(found)
            if len(seen) >= MAX_FILES:
                break
    return list(seen)


def _factory_file(spec: str | None, factory: Any) -> str | None:
    if factory is not None:
        target = getattr(factory, "func", factory)  # functools.partial
        return inspect.getsourcefile(target)
    if spec and ":" in spec:
        target = spec.rsplit(":", 1)[0]
        if target.endswith(".py"):
            return target
        files = _module_files(target)
        return str(files[-1]) if files and len(files) == len(target.split(".")) else None
    if spec:
        from energymodel.models.zoo.registry import ZOO

        entry = ZOO.get(spec)
        return inspect.getsourcefile(entry.factory) if entry is not None else None
    return None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def model_source_hash(spec: str | None, factory: Any = None) -> dict[str, Any] | None:
    """``{"file", "sha256", "files"}``: the factory's file, its SHA-256, and ``{path: SHA-256}`` of its closure.

    ``spec`` is the config's ``model`` (zoo name, ``pkg.mod:factory`` or ``file.py:factory``); with a Python
    ``factory`` instead, the file defining it. None when no source file can be found (e.g. a lambda in a REPL).
    """
    try:
        path = _factory_file(spec, factory)
    except (TypeError, ImportError, ValueError, OSError):
        path = None
    try:
        if not path or not Path(path).is_file():
            return None
        files = {}
        for f in source_closure(path):
            try:
                files[str(f)] = _sha256(f)
            except OSError:
                continue
        main = Path(path).resolve()
        return {"file": str(main), "sha256": files.get(str(main)) or _sha256(main), "files": files}
    except OSError:
        return None


def source_changes(old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
    """The files whose code differs between two :func:`model_source_hash` records (``[]``: the same code):
    a changed file by its path, one that joined or left the closure with a note saying so.

    A record of an older version (no ``files``) is compared by its factory file alone.
    """
    if not isinstance(old, dict) or not isinstance(new, dict) or not old.get("sha256"):
        return []
    before, after = old.get("files"), new.get("files")
    if isinstance(before, dict) and isinstance(after, dict):
        out = []
        for f in sorted(set(before) | set(after)):
            if f not in after:
                out.append(f"{f} no longer imported")
            elif f not in before:
                out.append(f"{f} newly imported")
            elif before[f] != after[f]:
                out.append(f)
        return out
    return [] if old.get("sha256") == new.get("sha256") else [str(new.get("file"))]
