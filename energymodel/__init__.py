"""energymodel: an analytical hardware cost model (MACs, memory accesses, storage, energy) for PyTorch modules.

The Python API is at the top level — :func:`profile`, :func:`compare`, :func:`sharing_points`,
:func:`training_cost`, :func:`sweep` (see :mod:`energymodel.api`) — and is imported on first use
(PEP 562), so ``import energymodel`` and ``energymodel --help`` stay fast (no torch, no pandas).
``energymodel.profile`` and ``energymodel.sweep`` are those functions even after the submodules of the
same names are imported; their other contents are reached with ``from energymodel.profile import ...``.
Never imports ``incremental``.
"""

from __future__ import annotations

import importlib
import sys
import types

__version__ = "0.1.0"

#: public name -> the module that defines it (imported lazily)
_LAZY = {
    "profile": "energymodel.api",
    "compare": "energymodel.api",
    "sharing_points": "energymodel.api",
    "training_cost": "energymodel.api",
    "sweep": "energymodel.api",
    "register_rule": "energymodel.rules",
    "fvcore_check": "energymodel.fvcore_check",
    "BlockNet": "energymodel.blocks",
    "as_block_net": "energymodel.blocks",
    "split_at": "energymodel.blocks",
    "block_view": "energymodel.chain",
    "UserError": "energymodel.errors",
    "TableError": "energymodel.errors",
}

__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        types.ModuleType.__setattr__(sys.modules[__name__], name, value)
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


class _Package(types.ModuleType):
    """The package object: importing ``energymodel.profile`` (or ``.sweep``) does not replace the API
    function of that name with the submodule (the import system sets the attribute after loading it)."""

    def __setattr__(self, name: str, value) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
