"""Formatting for the report: one formatter per quantity, and tables of pre-formatted cells."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
from markupsafe import Markup


def _finite(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def fmt_count(v: Any) -> str:
    """``1.234e9`` -> ``1.23 G``; small integers as they are."""
    f = _finite(v)
    if f is None:
        return "–"
    if f == int(f) and abs(f) < 1e4:
        return f"{int(f)}"
    for div, suffix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(f) >= div:
            return f"{f / div:.3g} {suffix}"
    return f"{f:.3g}"


def fmt_energy(pj: Any) -> str:
    """pJ -> J / mJ / µJ / nJ / pJ with 3 significant digits."""
    f = _finite(pj)
    if f is None:
        return "–"
    for div, unit in ((1e18, "MJ"), (1e15, "kJ"), (1e12, "J"), (1e9, "mJ"), (1e6, "µJ"), (1e3, "nJ")):
        if abs(f) >= div:
            return f"{f / div:.3g} {unit}"
    return f"{f:.3g} pJ"


def fmt_bytes(v: Any) -> str:
    f = _finite(v)
    if f is None:
        return "–"
    for div, unit in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if abs(f) >= div:
            return f"{f / div:.3g} {unit}"
    return f"{f:.0f} B"


def fmt_x(v: Any) -> str:
    f = _finite(v)
    return "–" if f is None else f"{f:.3g}×"


def fmt_num(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    f = _finite(v)
    if f is None:
        return "–" if v is None or isinstance(v, (int, float)) else str(v)
    return f"{int(f)}" if f == int(f) and abs(f) < 1e6 else f"{f:.4g}"


def fmt_text(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return fmt_num(v)
    return str(v)


def _formatter_for(col: str) -> Callable[[Any], str]:
    if col.startswith("savings") or col.startswith("speedup"):
        return fmt_x
    if "energy" in col and col.endswith("_pj") or col == "energy_pj":
        return fmt_energy
    if col.endswith("_bytes"):
        return fmt_bytes
    if col in ("fraction", "fraction_params", "fraction_macs") or "accuracy" in col or col.endswith("seconds") \
            or col.endswith("seconds_per_epoch") or col == "breakeven":
        return fmt_num
    if "macs" in col or col.endswith(("accesses", "params", "_ops", "words")) or col == "steps":
        return fmt_count
    return fmt_text


def _cell(v: Any, fmt: Callable[[Any], str]) -> dict[str, Any]:
    f = _finite(v)
    numeric = f is not None and not isinstance(v, (bool, str))
    exact = ""
    if numeric:
        exact = f"{f:.6g}" if not float(f).is_integer() else f"{int(f):,}"
    text = fmt(v)
    return {"text": text, "num": numeric, "title": exact, "long": len(text) > 32}


def _table(rows: Sequence[dict], columns: Sequence[tuple[str, str]] | None = None,
           formats: dict[str, Callable] | None = None) -> dict[str, Any]:
    """A table for the template: ``columns`` (key, header); cells pre-formatted, numbers right-aligned."""
    if columns is None:
        keys: list[str] = []
        for r in rows:
            keys += [k for k in r if k not in keys]
        columns = [(k, _header(k)) for k in keys]
    formats = formats or {}
    body = []
    for r in rows:
        body.append([_cell(r.get(k), formats.get(k) or _formatter_for(k)) for k, _ in columns])
    numeric = [any(row[i]["num"] for row in body) for i in range(len(columns))]
    return {"headers": [h for _, h in columns], "rows": body, "numeric": numeric}


def _header(key: str) -> str:
    """``modelled_energy_pj`` -> ``modelled energy`` (values are shown in J units)."""
    return key.removesuffix("_pj").replace("_", " ")


def _records(frame: pd.DataFrame) -> list[dict]:
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in frame.to_dict(orient="records")]


def _svg(text: str | None) -> Markup | None:
    return Markup(text) if text else None
