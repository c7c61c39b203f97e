"""Cross-check our forward MACs against fvcore's ``FlopCountAnalysis``, module by module, with reasons.

fvcore counts one "flop" per multiply-accumulate of conv, linear and matmul, exactly as we count MACs. It
also counts batch/group/layer norm (batch norm in eval form: two per element), average pooling (one per input
element) and upsampling, which we count as element-wise ``add``/``mult`` operations (0 MACs, priced per
operation); and it ignores element-wise operators (ReLU, additions), as our MAC column does. It has no handle
for ``aten::scaled_dot_product_attention`` (it skips attention's two matrix products, which we count). Every
leaf module whose two numbers differ is flagged with the reason, and so are the functional ops a module runs
in its own ``forward`` (``self_attn.(ops)``: the projections and attention of ``nn.MultiheadAttention``), so
the rows' differences add up to the total's. fvcore runs a real forward pass (JIT trace)
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


def _ops_reason(ops: dict[str, float], ours: float, theirs: float) -> str:
    """Why fvcore's count of a module's own functional ops differs from ours (``ops``: aten op -> our MACs)."""
    if ours == theirs:
        return ""
    attention = ops.get("scaled_dot_product_attention", 0.0)
    if attention and abs(ours - attention - theirs) < 0.5:
        return (f"fvcore has no handle for aten::scaled_dot_product_attention (it skips it); we count its q·kᵀ "
                f"and p·v: {attention:,.0f} MACs")
    if theirs == 0:
        return f"fvcore skips these functional ops ({', '.join(sorted(ops))}); we count their MACs"
    return f"different counting of the functional ops {', '.join(sorted(ops))}"


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
    rows += _own_ops(model, layers, theirs, batch)
    total = float(layers["macs_forward"].sum()) / batch
    explained = sum(r["difference"] for r in rows)
    reason = ("" if total == their_total else "the sum of the rows above" if their_total - total == explained
              else f"the rows above explain {explained:,.0f} of it")
    rows.append({"module": "(total)", "kind": "", "macs": total, "fvcore_flops": float(their_total),
                 "difference": their_total - total, "agrees": total == their_total, "reason": reason})
    return pd.DataFrame(rows, columns=CHECK_COLUMNS)


def _own_ops(model: nn.Module, layers: pd.DataFrame, theirs: dict[str, int], batch: int) -> list[dict]:
    """One row per module that runs functional ops in its own ``forward``: our MACs of those ops beside fvcore's
    count of the module less its children's."""
    ops = layers[layers["kind"].str.startswith("aten.") & (layers["kind"] != "aten.(parameters)")]
    parents = ops["name"].str.rsplit(".(", n=1).str[0].where(ops["name"].str.contains(r"\.\("), "")
    children = {n: [f"{n}.{c}" if n else c for c, _ in m.named_children()] for n, m in model.named_modules()}
    rows = []
    for parent, group in ops.groupby(parents.to_numpy(), sort=False):
        mine = float(group["macs_forward"].sum()) / batch
        flops = float(theirs.get(parent, 0)) - sum(float(theirs.get(c, 0)) for c in children.get(parent, []))
        if mine == 0 and flops == 0:
            continue
        by_op = {str(k).removeprefix("aten."): float(v) / batch
                 for k, v in group.groupby("kind")["macs_forward"].sum().items() if v}
        rows.append({"module": f"{parent}.(ops)" if parent else "(ops outside modules)", "kind": "functional",
                     "macs": mine, "fvcore_flops": flops, "difference": flops - mine, "agrees": flops == mine,
                     "reason": _ops_reason(by_op, mine, flops)})
    return rows
