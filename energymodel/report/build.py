"""Building a :class:`ReportData` from a recipe: every section it asks for, computed."""

from __future__ import annotations

import datetime as _dt
import platform
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from energymodel.errors import UserError
from energymodel.report.inputs import ReportData, load_engine, load_measured

if TYPE_CHECKING:
    from energymodel.report.recipe import Recipe


def versions() -> dict[str, str]:
    """Versions of python, torch, numpy, pandas, matplotlib and energymodel."""
    import matplotlib
    import torch

    from energymodel import __version__

    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "pandas": pd.__version__, "matplotlib": matplotlib.__version__, "energymodel": __version__}


def build_report(recipe: Recipe, *, engine: dict | None = None, measured: dict | None = None) -> ReportData:
    """Compute every section a :class:`~energymodel.report.recipe.Recipe` asks for.

    ``engine`` / ``measured`` (already checked dicts) override the recipe's ``[engine]`` / ``[measured]``.
    """
    from energymodel.analysis.points import sharing_points
    from energymodel.analysis.profile import profile
    from energymodel.analysis.sharing import compare, strategy_ledgers
    from energymodel.analysis.sweep import breakeven, column_name, prepare_sweep
    from energymodel.models.blocks import as_block_net
    from energymodel.models.spec import resolve_model
    from energymodel.price.table import load_table
    from energymodel.report.fmt import SWEEP_NAMES

    resolved = resolve_model(recipe.model, recipe.classes)
    model = resolved.model
    shape = tuple(recipe.input_shape) if recipe.input_shape else resolved.input_shape
    if shape is None:
        raise UserError(f"{recipe.model}: the recipe needs [model] input = [C, H, W]")
    try:
        net = as_block_net(model)
        n_classes = net.num_classes
    except ValueError as exc:
        raise UserError(f"{recipe.model}: {exc}") from None
    table = load_table(recipe.table)
    prof = profile(model, shape, batch=recipe.batch, mode="training", optimizer=recipe.optimizer, table=table,
                   warn=False)
    settings = {"new_classes": recipe.new_classes, "samples_new": recipe.samples_new, "samples_old": recipe.samples_old,
                "epochs": recipe.epochs, "batch": recipe.batch, "optimizer": recipe.optimizer,
                "cache_prefix": recipe.cache_prefix, "tasks": recipe.tasks}
    ledgers = strategy_ledgers(model, shape, share=recipe.share, **settings)  # traced once, priced below
    cmp = compare(model, shape, share=recipe.share, table=table, ledgers=ledgers, **settings)
    sweeps = []
    own_key = tuple(recipe.share) if recipe.share is not None else None
    prepared: dict[Any, Any] = {}
    for i, spec in enumerate(recipe.sweeps):
        share = spec.share if spec.share is not None else recipe.share
        cache_key = tuple(share) if share is not None else None
        if cache_key not in prepared:
            prepared[cache_key] = prepare_sweep(
                model, shape, share=share, table=table, samples_new=recipe.samples_new,
                samples_old=recipe.samples_old, epochs=recipe.epochs, batch=recipe.batch,
                optimizer=recipe.optimizer, new_classes=recipe.new_classes, cache_prefix=recipe.cache_prefix,
                tasks=recipe.tasks, ledgers=ledgers if cache_key == own_key else None,
            )
        frame = prepared[cache_key].evaluate(spec.vary)
        be = breakeven(frame, key=spec.key, target=spec.target, against=spec.against)
        names = [SWEEP_NAMES.get(column_name(k), k) for k in (spec.spec or spec.vary)]
        sweeps.append({"title": spec.title or f"Sweep {i + 1}: " + " × ".join(names),
                       "frame": frame, "breakeven": be, "spec": dict(spec.spec), "target": spec.target,
                       "against": spec.against})
    if engine is None and recipe.engine_dir is not None:
        engine = load_engine(recipe.engine_dir)
    if measured is None and recipe.measured_file is not None:
        measured = load_measured(recipe.measured_file)
    points = sharing_points(model)
    n_params = sum(p.numel() for p in model.parameters())
    setup = {
        "model": {
            "spec": recipe.model, "class": type(model).__name__, "input_shape": list(shape),
            "classes": n_classes, "parameters": n_params, "blocks": [n for n, _ in net.blocks.named_children()],
            "sharing_points": len(points),
        },
        "training": {
            "batch": recipe.batch, "epochs": recipe.epochs, "optimizer": recipe.optimizer,
            "samples_new": recipe.samples_new, "samples_old": recipe.samples_old,
            "new_classes": recipe.new_classes or n_classes, "old_classes": n_classes,
            "tasks": recipe.tasks, "cache_prefix": recipe.cache_prefix,
        },
        "table": table.to_dict(),
        "recipe": str(recipe.path) if recipe.path else None,
        "versions": versions(),
        "generated": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    return ReportData(title=recipe.title, description=recipe.description, setup=setup, layers=prof.layers,
                      compare=cmp, sweeps=sweeps, engine=engine, measured=measured, residency=prof.residency())
