"""energymodel: an analytical hardware cost model (MACs, memory accesses, storage, energy) for PyTorch modules.

The Python API is at the top level — :func:`profile`, :func:`compare`, :func:`sharing_points`,
:func:`training_cost`, :func:`sweep` (see :mod:`energymodel.api`) — and is imported on first use
(PEP 562), so ``import energymodel`` and ``energymodel --help`` stay fast (no torch, no pandas).
``energymodel.profile`` and ``energymodel.sweep`` are those functions even when the old module paths of the
same names are imported.

The packages, lowest floor first (a package imports only from packages below it; ``docs/architecture.md``):
``models`` (BlockNet, chain views, the zoo, example inputs) < ``count`` (the trace, one rule per op, training
phases) < ``memory`` (the dataflow: tiling and memory levels) < ``price`` (energy tables, pricing, ledgers) <
``analysis`` (profile, sharing comparisons, sweeps, break-even) < ``referee`` (cross-checks by other tools) <
``report`` (plots, HTML, recipes) < ``cli``; ``api`` sits on top. ``errors``, ``atomic``, ``defaults``,
``progress`` and ``_imports`` are the ground floor every package may use. Never imports ``incremental``.
"""

from __future__ import annotations

import importlib
import sys
import types

from energymodel._imports import MovedModules

__version__ = "0.1.0"

#: public name -> the module that defines it (imported lazily)
_LAZY = {
    "profile": "energymodel.api",
    "compare": "energymodel.api",
    "sharing_points": "energymodel.api",
    "training_cost": "energymodel.api",
    "sweep": "energymodel.api",
    "register_rule": "energymodel.count.custom_rules",
    "fvcore_check": "energymodel.referee.fvcore",
    "measure_step_memory": "energymodel.referee.memory",
    "footprint": "energymodel.count.footprint",
    "EnergyModelWarning": "energymodel.errors",
    "BlockNet": "energymodel.models.blocks",
    "as_block_net": "energymodel.models.blocks",
    "split_at": "energymodel.models.blocks",
    "block_view": "energymodel.models.chain",
    "UserError": "energymodel.errors",
    "TableError": "energymodel.errors",
}

__all__ = [*_LAZY, "__version__"]

#: module paths of release 0.1 -> their homes now (importable, with a DeprecationWarning, until the next release)
_MOVED = {
    "energymodel.blocks": "energymodel.models.blocks",
    "energymodel.layers": "energymodel.models.layers",
    "energymodel.inputs": "energymodel.models.inputs",
    "energymodel.chain": "energymodel.models.chain",
    "energymodel.modelspec": "energymodel.models.spec",
    "energymodel.zoo": "energymodel.models.zoo",
    "energymodel.zoo.registry": "energymodel.models.zoo.registry",
    "energymodel.zoo.resnet": "energymodel.models.zoo.resnet",
    "energymodel.zoo.small": "energymodel.models.zoo.small",
    "energymodel.zoo.vgg": "energymodel.models.zoo.vgg",
    "energymodel.graph": "energymodel.count.trace",
    "energymodel.ops": "energymodel.count.ops",
    "energymodel.counting": "energymodel.count.phases",
    "energymodel.rules": "energymodel.count.custom_rules",
    "energymodel.dataflow": "energymodel.memory.tiling",
    "energymodel.table": "energymodel.price.table",
    "energymodel.ledger": "energymodel.price.ledger",
    "energymodel.profile": "energymodel.analysis.profile",
    "energymodel.sharing": "energymodel.analysis.sharing",
    "energymodel.sweep": "energymodel.analysis.sweep",
    "energymodel.breakeven": "energymodel.analysis.breakeven",
    "energymodel.fvcore_check": "energymodel.referee.fvcore",
    "energymodel.summary": "energymodel.cli.console",
    "energymodel.plots": "energymodel.report.plots",
    "energymodel.plots_results": "energymodel.report.run_plots",
    "energymodel.plotkit": "energymodel.report.plotkit",
    "energymodel.recipe": "energymodel.report.recipe",
    "energymodel.sweep_cli": "energymodel.cli.sweep",
    "energymodel.report_cli": "energymodel.cli.report",
}


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
MovedModules.install(_MOVED)
