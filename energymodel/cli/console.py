"""Readable console output: engineering notation, a header, a torchinfo-style summary line, by-module rows.

Numbers are shown with SI prefixes and four significant digits (``18.69 M`` MACs, ``96.12 µJ``); energies
are stored in pJ and shown in joules. JSON and CSV outputs keep exact numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

__all__ = ["eng", "energy", "header", "summary_line", "by_module", "unmodelled_by_kind", "layer_view",
           "integer_columns", "DISPLAY_COLUMNS"]

_BIG = ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))
_SMALL = ((1.0, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n"), (1e-12, "p"), (1e-15, "f"))

#: per-layer columns of the console view (all numbers in engineering notation)
DISPLAY_COLUMNS = ["name", "kind", "modelled", "trainable", "params", "macs", "sram_accesses", "dram_accesses",
                   "energy_pj"]


def eng(value: Any, unit: str = "") -> str:
    """``value`` with an SI prefix and 4 significant digits: ``eng(18691840)`` = ``"18.69 M"``,
    ``eng(9.6e-5, "J")`` = ``"96 µJ"``; values below 1000 without a unit are shown as they are."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-" if value is None else str(value)
    v = float(value)
    if v == 0:
        return f"0 {unit}".rstrip()
    a = abs(v)
    for scale, prefix in _BIG:
        if a >= scale:
            return f"{v / scale:.4g} {prefix}{unit}".rstrip()
    if not unit or a >= 1:
        return f"{v:.4g} {unit}".rstrip()
    for scale, prefix in _SMALL:
        if a >= scale:
            return f"{v / scale:.4g} {prefix}{unit}"
    return f"{v:.3e} {unit}"


def energy(pj: float) -> str:
    """Energy given in pJ, shown in joules with a prefix: ``energy(96120000.0)`` = ``"96.12 µJ"``."""
    return eng(pj * 1e-12, "J")


def header(*, model: str, kind: str, input_shape: Sequence[int], batch: int, mode: str, table: Any) -> str:
    """``model smallcnn (BlockNet) · input 1x28x28 · batch 1 · mode inference · table 45nm (fp32, 32-bit words)``."""
    shape = input_shape.text() if hasattr(input_shape, "text") else "x".join(map(str, input_shape))
    return (f"model {model} ({kind}) · input {shape} · batch {batch} · mode {mode} · "
            f"table {table.name} ({table.datatype}, {table.word_bits}-bit words)")


def summary_line(totals: dict[str, Any], batch: int) -> str:
    """``params 468 k (trainable 0) · MACs 18.69 M per sample · energy 96.12 µJ per sample (96.12 µJ per batch of 1)``."""
    per = max(int(batch), 1)
    macs = totals.get("macs", totals.get("macs_forward", 0.0))
    return (f"params {eng(totals['params'])} (trainable {eng(totals.get('trainable_params', 0))}) · "
            f"MACs {eng(macs / per)} per sample · energy {energy(totals['energy_pj'] / per)} per sample "
            f"({energy(totals['energy_pj'])} per batch of {per})")


def _base(name: str) -> list[str]:
    return name.split("#", 1)[0].split(".")


def by_module(layers: pd.DataFrame, depth: int) -> pd.DataFrame:
    """Rows summed by module path cut to ``depth`` components (``depth=1``: ``blocks``, ``head``; like
    fvcore's ``flop_count_table(max_depth=...)``), in order of first appearance. ``kind`` is kept when a
    group has one kind; ``modelled`` is true when every row of the group is."""
    if depth < 1:
        raise ValueError("depth must be >= 1")
    keys = [".".join(_base(n)[:depth]) for n in layers["name"]]
    numeric = [c for c in layers.columns if c not in ("name", "kind", "modelled", "trainable")
               and pd.api.types.is_numeric_dtype(layers[c]) and not pd.api.types.is_bool_dtype(layers[c])]
    frame = layers.assign(_key=keys)
    grouped = frame.groupby("_key", sort=False)
    out = grouped[numeric].sum()
    out.insert(0, "kind", grouped["kind"].agg(lambda s: s.iloc[0] if s.nunique() == 1 else ""))
    out.insert(1, "modelled", grouped["modelled"].all())
    out.insert(2, "trainable", grouped["trainable"].any())
    out.insert(3, "calls", grouped.size())
    return out.reset_index(names="name")


def unmodelled_by_kind(layers: pd.DataFrame) -> list[str]:
    """``["aten.foo: 2 calls (a.(foo), b.(foo))", ...]`` for the rows without a counting rule."""
    bad = layers[~layers["modelled"].astype(bool)]
    out = []
    for kind, rows in bad.groupby("kind", sort=False):
        names = list(rows["name"])
        shown = ", ".join(names[:4]) + (" ..." if len(names) > 4 else "")
        out.append(f"{kind}: {len(names)} call{'s' if len(names) > 1 else ''} ({shown})")
    return out


def layer_view(layers: pd.DataFrame) -> pd.DataFrame:
    """The console columns with counts in engineering notation and energy in joules."""
    view = layers[[c for c in DISPLAY_COLUMNS if c in layers.columns]].copy()
    for col in view.columns:
        if col == "energy_pj":
            view[col] = [energy(v) for v in view[col]]
        elif col not in ("name", "kind", "modelled", "trainable") and pd.api.types.is_numeric_dtype(view[col]):
            view[col] = [eng(v) for v in view[col]]
    if "calls" in layers.columns:
        view.insert(2, "calls", layers["calls"])
    return view.rename(columns={"energy_pj": "energy"})


_NOT_COUNTS = ("energy", "fraction", "savings", "ratio", "_pj", "pj_", "share_of")


def integer_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every count column (finite, integer-valued floats: MACs, accesses, params, bytes)
    as integers, so CSV shows ``18691840`` rather than ``18691840.0``."""
    out = frame.copy()
    for col in out.columns:
        s = out[col]
        if s.dtype.kind != "f" or any(k in str(col) for k in _NOT_COUNTS) or not len(s):
            continue
        values = s.to_numpy()
        if all(math.isfinite(v) and float(v).is_integer() and abs(v) < 2**63 for v in values):
            out[col] = s.astype("int64")
    return out
