"""Cross-check our forward MACs against fvcore's ``FlopCountAnalysis``, module by module, with reasons.

fvcore counts one "flop" per multiply-accumulate of conv, linear and matmul, exactly as we count MACs. It
also counts batch/group/layer norm (batch norm in eval form: two per element), average pooling (one per input
element) and upsampling, which we count as element-wise ``add``/``mult`` operations (0 MACs, priced per
operation); and it ignores element-wise operators (ReLU, additions), as our MAC column does. Every leaf
module whose two numbers differ is flagged with the reason. fvcore runs a real forward pass (JIT trace)
at batch 1, so the input is bounded by :data:`~energymodel.models.inputs.MAX_REAL_TRACE_ELEMENTS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
from torch import nn

from energymodel.errors import UserError, one_line
from energymodel.models.inputs import MAX_REAL_TRACE_ELEMENTS, example_inputs, real_inputs

__all__ = ["fvcore_check", "REASONS", "CHECK_COLUMNS"]

CHECK_COLUMNS = ["module", "kind", "macs", "fvcore_flops", "difference", "agrees", "reason"]

#: why fvcore's count of a module kind differs from our MACs (matched on the class name)
REASONS: dict[str, str] = {
    "BatchNorm": "fvcore counts batch norm (eval: 2 per element, 1 without affine); we count add/mult ops, 0 MACs",
    "GroupNorm": "fvcore counts group norm; we count it as add/mult ops, 0 MACs",
    "LayerNorm": "fvcore counts layer norm; we count it as add/mult ops, 0 MACs",
    "InstanceNorm": "fvcore counts instance norm; we count it as add/mult ops, 0 MACs",
    "AdaptiveAvgPool": "fvcore counts average pooling (1 per input element); we count add ops, 0 MACs",
    "AvgPool": "fvcore counts average pooling; we count add ops, 0 MACs",
    "Upsample": "fvcore counts upsampling; we count it as element-wise ops, 0 MACs",
}


def _reason(kind: str, modelled: bool, ours: float, theirs: float) -> str:
    if ours == theirs:
        return ""
    if not modelled:
        return "no energymodel counting rule for this kind (unmodelled, counted as 0)"
    for prefix, why in REASONS.items():
        if kind.startswith(prefix):
            return why
    if theirs == 0:
        return "fvcore has no handle for this operator (it skips it); we count MACs"
    return "different counting rule"


def _fvcore_by_module(model: nn.Module, args: tuple) -> tuple[dict[str, int], int]:
    try:
        from fvcore.nn import FlopCountAnalysis
    except ImportError:
        raise UserError("--check fvcore needs fvcore: pip install fvcore") from None
    fca = FlopCountAnalysis(model, args)
    fca.unsupported_ops_warnings(False)
    fca.uncalled_modules_warnings(False)
    fca.tracer_warnings("none")
    try:
        return dict(fca.by_module()), int(fca.total())
    except Exception as exc:  # the JIT tracer cannot follow the model
        raise UserError(f"fvcore cannot trace {type(model).__name__}: {one_line(exc)}") from None


def fvcore_check(model: nn.Module, input_shape: Sequence[int] | None = None, *, inputs: Any = None,
                 ours: Any = None) -> pd.DataFrame:
    """Our forward MACs beside fvcore's flops for every leaf module (batch 1, inference), then a
    ``(total)`` row. ``ours`` is a :class:`~energymodel.analysis.profile.Profile` of the same model and input (any
    batch and mode: its forward MACs per sample are used); profiled here when not given. Columns:
    :data:`CHECK_COLUMNS`; ``difference`` = fvcore - ours; ``reason`` says why a row differs."""
    from energymodel.analysis.profile import profile

    ex = example_inputs(model, input_shape, inputs)
    if ex.kwargs:
        raise UserError("fvcore takes positional inputs only, not keyword inputs")
    if ex.elements() > MAX_REAL_TRACE_ELEMENTS:
        raise UserError(f"the fvcore check runs a real forward pass: {ex.elements():,} input elements is more "
                        f"than {MAX_REAL_TRACE_ELEMENTS:,}")
    if ours is None:
        ours = profile(model, input_shape, inputs=inputs, warn=False)
    batch = int(ours.settings["batch"])
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        params = next(model.parameters(), None)
        real = real_inputs(ex, params.device if params is not None else "cpu")
        theirs, their_total = _fvcore_by_module(model, tuple(real.args))
    finally:
        for m, t in modes.items():
            m.training = t
    layers = ours.layers
    rows = []
    modules = layers[~layers["kind"].str.startswith("aten.") & (layers["name"] != "(loss)")]
    for base, group in modules.groupby(modules["name"].str.split("#").str[0], sort=False):
        mine = float(group["macs_forward"].sum()) / batch
        flops = float(theirs.get(base, 0))
        kind = str(group["kind"].iloc[0])
        modelled = bool(group["modelled"].all())
        rows.append({"module": base, "kind": kind, "macs": mine, "fvcore_flops": flops, "difference": flops - mine,
                     "agrees": flops == mine, "reason": _reason(kind, modelled, mine, flops)})
    total = float(layers["macs_forward"].sum()) / batch
    leaf_sum = sum(r["fvcore_flops"] for r in rows)
    reason = ("" if total == their_total else "sum of the module rows above"
              + (" and of functional ops outside modules" if their_total != leaf_sum else ""))
    rows.append({"module": "(total)", "kind": "", "macs": total, "fvcore_flops": float(their_total),
                 "difference": their_total - total, "agrees": total == their_total, "reason": reason})
    return pd.DataFrame(rows, columns=CHECK_COLUMNS)
