"""Import machinery of both packages: lazy re-exports (PEP 562) and the old module paths of release 0.1.

* :func:`lazy_exports` gives a package ``__init__`` a module-level ``__getattr__``/``__dir__`` that imports a
  public name's defining module on first use, so ``from incremental.train import fit`` works without making
  ``import incremental.train.config`` load the training loop (and torch) first.
* :class:`MovedModules` is a meta-path finder for the modules that moved when the flat packages were grouped
  by concept (see ``CHANGELOG.md``): ``import energymodel.sharing`` still works for one release, returns the
  module at its new path (``energymodel.analysis.sharing``, the same object) and warns
  :class:`DeprecationWarning` naming the new path.

Imports nothing from the rest of the project, so every package may use it.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from collections.abc import Callable, Mapping
from types import ModuleType

__all__ = ["lazy_exports", "MovedModules"]


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], object], Callable[[], list]]:
    """``(__getattr__, __dir__)`` for ``package``: ``exports`` maps a public name to the module defining it."""

    def __getattr__(name: str) -> object:
        if name in exports:
            value = getattr(importlib.import_module(exports[name]), name)
            setattr(sys.modules[package], name, value)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list:
        return sorted({*vars(sys.modules[package]), *exports})

    return __getattr__, __dir__


class _Alias(importlib.abc.Loader):
    """Loads an old module path as the module at its new path (one object under two names)."""

    def __init__(self, new: str) -> None:
        self.new = new

    def create_module(self, spec) -> ModuleType:
        warnings.warn(f"{spec.name} is now {self.new}; the old path works until the next release",
                      DeprecationWarning, stacklevel=2)  # the importer (warnings skips importlib's frames)
        return importlib.import_module(self.new)

    def exec_module(self, module: ModuleType) -> None:
        return None


class MovedModules(importlib.abc.MetaPathFinder):
    """Old module path -> new module path, for the modules of one top-level package."""

    def __init__(self, moved: Mapping[str, str]) -> None:
        self.moved = dict(moved)

    def find_spec(self, fullname: str, path=None, target=None):
        new = self.moved.get(fullname)
        if new is None:
            return None
        return importlib.util.spec_from_loader(fullname, _Alias(new))

    @classmethod
    def install(cls, moved: Mapping[str, str]) -> None:
        """Add a finder for ``moved`` to ``sys.meta_path`` unless one with the same paths is there already."""
        if not any(isinstance(f, cls) and f.moved == dict(moved) for f in sys.meta_path):
            sys.meta_path.append(cls(moved))
