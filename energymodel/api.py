"""The top-level Python API: ``energymodel.profile``, ``compare``, ``sharing_points``, ``training_cost``, ``sweep``.

Each takes a model (an ``nn.Module``, or a spec string: a zoo name, ``package.module:factory`` or
``file.py:factory``) and what it is called with: ``input_shape`` (per sample, without the batch dimension,
e.g. ``(3, 32, 32)``; a zoo model or a model with an ``input_shape`` attribute brings its own) or example
``inputs`` (a tensor, a tuple of tensors, or a dict of keyword tensors, each with a batch dimension; integer
token ids included), taken by every function. Sharing points are the model's declared blocks, its top-level
children when they run one after another (:func:`energymodel.models.chain.block_view`), or ``blocks=[names]``.
A sharing point is chosen by index ``k`` (0 = share nothing) or by ``fraction`` of the conv/linear
layers (snapped to the nearest point, with a warning when it is not exact). Defaults are
:mod:`energymodel.defaults`.

    >>> import energymodel
    >>> p = energymodel.profile("smallcnn")
    >>> p.totals["macs_forward"]
    18691840.0
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from torch import nn

from energymodel import defaults as D
from energymodel.errors import EnergyModelWarning, UserError

__all__ = ["profile", "compare", "sharing_points", "training_cost", "sweep", "model_of", "shares_of",
           "frozen_prefixes"]


def model_of(model: nn.Module | str, input_shape: Sequence[int] | None = None, *, classes: int | None = None,
             need_shape: bool = True) -> tuple[nn.Module, tuple[int, ...] | None]:
    """The module and input shape: a spec string is built (zoo default shape), a module keeps its own
    ``input_shape`` attribute when no shape is given."""
    from energymodel.models.inputs import check_input_shape
    from energymodel.models.spec import resolve_model

    if isinstance(model, str):
        resolved = resolve_model(model, classes)
        module, own = resolved.model, resolved.input_shape
    elif isinstance(model, nn.Module):
        if classes is not None:
            raise UserError("classes= applies to a model spec string; build the module with its classes")
        module, own = model, getattr(model, "input_shape", None)
    else:
        raise UserError(f"model must be an nn.Module or a spec string, not {type(model).__name__}")
    shape = input_shape if input_shape is not None else own
    if shape is None:
        if need_shape:
            raise UserError(f"{type(module).__name__}: give input_shape (per sample, without the batch dimension; "
                            "use batch= for the batch)")
        return module, None
    return module, check_input_shape(shape)


def _as_list(v: Any) -> list:
    if v is None:
        return []
    if isinstance(v, (list, tuple)):
        return list(v)
    return [v]


def shares_of(net: nn.Module, k: Any = None, fraction: Any = None, *, note=None) -> list[int] | None:
    """Sharing point indices from ``k`` (indices) and ``fraction`` (fractions of the conv/linear layers,
    each snapped to the nearest point; ``note`` (default ``warnings.warn``) is told when one is not
    exact). ``None`` when neither is given: every point."""
    from energymodel.analysis.points import sharing_points as points_of

    if k is None and fraction is None:
        return None
    note = note or (lambda msg: warnings.warn(msg, EnergyModelWarning, stacklevel=3))
    pts = points_of(net)
    out: list[int] = []
    for v in _as_list(k):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise UserError(f"sharing point k={v!r} must be an integer 0..{len(pts) - 1}")
        if not 0 <= v < len(pts):
            raise UserError(f"sharing point k={v} out of range 0..{len(pts) - 1}")
        out.append(int(v))
    for f in _as_list(fraction):
        if isinstance(f, bool) or not isinstance(f, numbers.Real) or not 0.0 <= float(f) <= 1.0:
            raise UserError(f"sharing fraction {f!r} must lie in [0, 1]")
        best = min(pts, key=lambda p: (abs(p.fraction - float(f)), p.index))
        if abs(best.fraction - float(f)) > 1e-9:
            note(f"fraction {float(f):g} snapped to the nearest sharing point k={best.index} "
                 f"(after {best.after}, fraction {best.fraction:.3g})")
        out.append(best.index)
    return sorted(set(out))


def frozen_prefixes(model: nn.Module, names: Iterable[str], input_shape=None, *, inputs=None,
                    blocks: Sequence[str] | None = None) -> list[str]:
    """Module prefixes of ``model`` from module paths or block names as sharing points print them
    (``layer1_0`` of a BlockNet is ``blocks.layer1_0``)."""
    names = [n.strip() for n in names if n.strip()]
    paths = {n for n, _ in model.named_modules()}
    if all(n in paths for n in names):
        return names
    from energymodel.models.chain import block_members_of, block_view

    net = block_view(model, input_shape, inputs=inputs, blocks=blocks)
    by_block = block_members_of(model, net)
    by_block.update({getattr(net, "paths", {}).get(k, k): v for k, v in list(by_block.items())})
    out = []
    for n in names:
        if n in paths:
            out.append(n)
        elif n in by_block:
            out.extend(by_block[n])
        else:
            raise UserError(f"--frozen {n!r} names no module or block of {type(model).__name__} "
                            f"(blocks: {', '.join(by_block)})")
    return out


def profile(model: nn.Module | str, input_shape: Sequence[int] | None = None, *, inputs: Any = None,
            batch: int | None = None, mode: str = D.MODE, frozen: Iterable[str] = (), optimizer: str = D.OPTIMIZER,
            table: Any = D.ENERGY_TABLE, weight_decay: float = D.WEIGHT_DECAY, classes: int | None = None,
            warn: bool = True):
    """Costs of one inference pass or training step: :func:`energymodel.analysis.profile.profile` (a
    :class:`~energymodel.analysis.profile.Profile`), with a spec string accepted and ``frozen`` taking block names."""
    from energymodel.analysis.profile import profile as run

    module, shape = model_of(model, input_shape, classes=classes, need_shape=inputs is None)
    if inputs is not None:
        shape = None
    frozen = frozen_prefixes(module, frozen, shape, inputs=inputs) if frozen else []
    return run(module, shape, inputs=inputs, batch=batch, mode=mode, frozen=frozen, optimizer=optimizer,
               table=table, weight_decay=weight_decay, warn=warn)


def sharing_points(model: nn.Module | str, input_shape: Sequence[int] | None = None, *, inputs: Any = None,
                   blocks: Sequence[str] | None = None, classes: int | None = None) -> list:
    """The sharing points ``0..n`` of any model (see the module docstring), with layer, parameter and MAC
    fractions (:class:`~energymodel.analysis.points.SharingPoint`)."""
    from energymodel.analysis.points import sharing_points as points_of
    from energymodel.count.phases import count
    from energymodel.count.trace import trace
    from energymodel.models.chain import block_view

    module, shape = model_of(model, input_shape, classes=classes, need_shape=inputs is None)
    if inputs is not None:
        shape = None
    net = block_view(module, shape, inputs=inputs, blocks=blocks)
    counts = count(trace(net, shape, inputs=inputs), batch=1, warn=False)
    return points_of(net, counts.input_shape, counts=counts)


def _strategy(model, input_shape, blocks, k, fraction, classes, inputs=None):
    """The model as a BlockNet, what it is called with (a shape, or :class:`ExampleInputs` standing for one
    through the analysis functions) and the sharing points asked for."""
    from energymodel.models.chain import block_view
    from energymodel.models.inputs import example_inputs

    module, shape = model_of(model, input_shape, classes=classes, need_shape=inputs is None)
    spec = example_inputs(module, None, inputs) if inputs is not None else shape
    net = block_view(module, spec, blocks=blocks)
    return net, spec, shares_of(net, k, fraction)


def compare(model: nn.Module | str, input_shape: Sequence[int] | None = None, *, inputs: Any = None, k: Any = None,
            fraction: Any = None, blocks: Sequence[str] | None = None, new_classes: int | None = None,
            samples_new: int = D.SAMPLES_NEW, samples_old: int = D.SAMPLES_OLD, epochs: int = D.EPOCHS,
            batch: int = D.BATCH, optimizer: str = D.OPTIMIZER, table: Any = D.ENERGY_TABLE,
            cache_prefix: bool = False, tasks: int = D.TASKS, classes: int | None = None,
            memory_budget: int | str | None = None):
    """Clone-and-branch at the chosen sharing points (default all) against regular incremental learning
    and full retraining: :func:`energymodel.analysis.sharing.compare` (a DataFrame, one row per strategy).
    ``memory_budget`` (bytes, or a text such as ``"256KiB"``): ``df.attrs["shallowest_fitting_point"]`` is the
    shallowest sharing point whose training step fits it."""
    from energymodel.analysis.sharing import compare as run

    if isinstance(memory_budget, str):
        from energymodel.count.footprint import parse_bytes

        memory_budget = parse_bytes(memory_budget, "memory budget")
    net, shape, share = _strategy(model, input_shape, blocks, k, fraction, classes, inputs)
    return run(net, shape, share=share, new_classes=new_classes, samples_new=samples_new, samples_old=samples_old,
               epochs=epochs, batch=batch, optimizer=optimizer, table=table, cache_prefix=cache_prefix, tasks=tasks,
               memory_budget=memory_budget)


def training_cost(model: nn.Module | str, input_shape: Sequence[int] | None = None, *, inputs: Any = None, k: int = 0,
                  fraction: float | None = None, blocks: Sequence[str] | None = None, samples: int = D.SAMPLES_NEW,
                  epochs: int = D.EPOCHS, batch: int = D.BATCH, optimizer: str = D.OPTIMIZER,
                  num_classes: int | None = None, table: Any = D.ENERGY_TABLE, cache_prefix: bool = False,
                  weight_decay: float = D.WEIGHT_DECAY, classes: int | None = None):
    """Modelled cost of training blocks ``[k, n)`` and a head (``k = 0``: everything):
    :func:`energymodel.analysis.sharing.training_cost` (a :class:`~energymodel.analysis.sharing.TrainingCost`)."""
    from energymodel.analysis.sharing import training_cost as run

    net, shape, share = _strategy(model, input_shape, blocks, None if fraction is not None else k, fraction, classes,
                                  inputs)
    if share is None or len(share) != 1:
        raise UserError("training_cost takes one sharing point: k= or fraction=")
    return run(net, shape, share=share[0], samples=samples, epochs=epochs, batch=batch, optimizer=optimizer,
               num_classes=num_classes, table=table, cache_prefix=cache_prefix, weight_decay=bool(weight_decay))


def sweep(model: nn.Module | str, input_shape: Sequence[int] | None = None, vary: Mapping[str, Any] | None = None,
          *, inputs: Any = None, k: Any = None, fraction: Any = None, blocks: Sequence[str] | None = None, new_classes: int | None = None,
          samples_new: int = D.SAMPLES_NEW, samples_old: int = D.SAMPLES_OLD, epochs: int = D.EPOCHS,
          batch: int = D.BATCH, optimizer: str = D.OPTIMIZER, table: Any = D.ENERGY_TABLE,
          cache_prefix: bool = False, tasks: int = D.TASKS, classes: int | None = None):
    """Energy and savings at every grid point of ``vary`` (table key -> values, e.g. ``{"dram": [100, 640]}``)
    x sharing point: :func:`energymodel.analysis.sweep.sweep` (a DataFrame)."""
    from energymodel.analysis.sweep import sweep as run

    if not vary:
        raise UserError("sweep needs vary= (table key -> values), e.g. {\"dram\": [100, 640, 2000]}")
    net, shape, share = _strategy(model, input_shape, blocks, k, fraction, classes, inputs)
    return run(net, shape, vary, share=share, new_classes=new_classes, samples_new=samples_new,
               samples_old=samples_old, epochs=epochs, batch=batch, optimizer=optimizer, table=table,
               cache_prefix=cache_prefix, tasks=tasks)
