"""Formatting for the report: one formatter per quantity, and tables of pre-formatted cells.

One quantity, one format, everywhere in the report (tables, callouts, captions):

* accuracy (a fraction in the results) as a percentage with one decimal: ``0.9154`` -> ``91.5 %``, with
  the standard deviation over seeds when there is one: ``91.5 ± 0.4 %``;
* forgetting and backward transfer (differences of accuracies) in percentage points: ``-0.032`` ->
  ``−3.2 pp`` (backward transfer always signed);
* sharing fraction with two decimals: ``0.6`` -> ``0.60``;
* savings (baseline / strategy, > 1 is cheaper): ``3.14×``, ``2.00×``, ``12.3×``;
* energy (pJ in the data) in J / mJ / µJ / nJ / pJ, bytes in B / KiB / MiB / GiB, seconds in s;
* counts (MACs, accesses, parameters) with a k / M / G suffix; the unit (e.g. 32-bit words) in the header.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
from markupsafe import Markup

#: units of the energy-table entries a sweep can vary (sweep column -> unit)
SWEEP_UNITS = {
    **{op: "pJ/op" for op in ("mac", "add", "mult", "cmp")},
    **{lvl: "pJ/access" for lvl in ("rf", "sram", "dram")},
    "buffer_bytes": "bytes", "rf_accesses_per_op": "RF accesses/op", "word_bits": "bit",
    "dram_mac_ratio": "× (pJ per DRAM word / pJ per MAC)",
}

#: the display name of every sweep key
SWEEP_NAMES = {
    "mac": "MAC energy", "add": "add energy", "mult": "multiply energy", "cmp": "compare energy",
    "rf": "RF access energy", "sram": "SRAM access energy", "dram": "DRAM access energy",
    "buffer_bytes": "on-chip buffer size", "rf_accesses_per_op": "RF accesses per operation",
    "word_bits": "word width", "dram_mac_ratio": "DRAM / MAC energy ratio",
}


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
    """Bytes -> B / KiB / MiB / GiB / TiB with 3 significant digits."""
    f = _finite(v)
    if f is None:
        return "–"
    for div, unit in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if abs(f) >= div:
            return f"{f / div:.3g} {unit}"
    return f"{f:.0f} B"


def fmt_x(v: Any) -> str:
    """A ratio (savings, speed-up) -> ``3.14×``, ``2.00×``, ``12.3×``, ``150×`` (two decimals below 10)."""
    f = _finite(v)
    if f is None:
        return "–"
    return f"{f:.0f}×" if abs(f) >= 99.95 else f"{f:.1f}×" if abs(f) >= 9.995 else f"{f:.2f}×"


def fmt_pct(v: Any, std: Any = None) -> str:
    """An accuracy (fraction) -> ``91.5 %``; with a standard deviation over seeds ``91.5 ± 0.4 %``."""
    f = _finite(v)
    if f is None:
        return "–"
    s = _finite(std)
    return f"{100 * f:.1f} %" if s is None else f"{100 * f:.1f} ± {100 * s:.1f} %"


def fmt_pp(v: Any, signed: bool = False) -> str:
    """A difference of accuracies (fraction) in percentage points: ``0.032`` -> ``3.2 pp``, signed ``+3.2 pp``
    (zero is ``0.0 pp`` either way)."""
    f = _finite(v)
    if f is None:
        return "–"
    p = 100 * f
    if abs(p) < 0.05:
        p = 0.0
    text = f"{p:+.1f}" if signed and p != 0 else f"{p:.1f}"
    return text.replace("-", "−") + " pp"


def fmt_fraction(v: Any) -> str:
    """A sharing fraction -> ``0.60``."""
    f = _finite(v)
    return "–" if f is None else f"{f:.2f}"


def fmt_seconds(v: Any) -> str:
    """Seconds -> ``0.428 s`` / ``12.5 s`` / ``1,234 s``."""
    f = _finite(v)
    if f is None:
        return "–"
    return f"{f:,.0f} s" if abs(f) >= 1000 else f"{f:.3g} s"


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


def fmt_key_value(key: str, v: Any) -> str:
    """A value of a swept table entry with its unit: ``dram``, 581.8 -> ``581.8 pJ/access``; bytes as KiB/MiB."""
    f = _finite(v)
    if f is None:
        return "–"
    if key == "buffer_bytes":
        return fmt_bytes(f)
    unit = SWEEP_UNITS.get(key, "")
    num = f"{int(f):,}" if f.is_integer() else f"{f:.4g}"
    if key == "dram_mac_ratio":
        return f"{num}×"
    return f"{num} {unit}".strip()


def formatter_for(col: str) -> Callable[[Any], str]:
    """The formatter of a result column, chosen by its name (one per quantity)."""
    if col.startswith("savings") or col.startswith("speedup"):
        return fmt_x
    if "accuracy" in col and not col.endswith("_std"):
        return fmt_pct
    if col.startswith("forgetting"):
        return fmt_pp
    if col.startswith("backward_transfer"):
        return lambda v: fmt_pp(v, signed=True)
    if "energy" in col and col.endswith("_pj") or col == "energy_pj":
        return fmt_energy
    if col.endswith("_bytes"):
        return fmt_bytes
    if col == "fraction" or col.startswith("fraction_"):
        return fmt_fraction
    if col.endswith("seconds") or col.endswith("seconds_per_epoch"):
        return fmt_seconds
    if "macs" in col or col.endswith(("accesses", "params", "_ops", "words")) or col == "steps":
        return fmt_count
    return fmt_text


def cell(v: Any, fmt: Callable[[Any], str]) -> dict[str, Any]:
    f = _finite(v)
    numeric = f is not None and not isinstance(v, (bool, str))
    exact = ""
    if numeric:
        exact = f"{f:.6g}" if not float(f).is_integer() else f"{int(f):,}"
    text = fmt(v)
    return {"text": text, "num": numeric, "title": exact, "long": len(text) > 32}


def table(rows: Sequence[dict], columns: Sequence[tuple[str, str]] | None = None,
          formats: dict[str, Callable] | None = None) -> dict[str, Any]:
    """A table for the template: ``columns`` (key, header); cells pre-formatted, numbers right-aligned.

    An accuracy column ``k`` is shown with the row's ``k_std`` (standard deviation over seeds) when present.
    """
    if columns is None:
        keys: list[str] = []
        for r in rows:
            keys += [k for k in r if k not in keys]
        columns = [(k, header(k)) for k in keys]
    formats = formats or {}
    body = []
    for r in rows:
        line = []
        for k, _ in columns:
            fmt = formats.get(k) or formatter_for(k)
            if fmt is fmt_pct and r.get(f"{k}_std") is not None:  # mean ± std over seeds
                line.append(cell(r.get(k), lambda v, s=r[f"{k}_std"]: fmt_pct(v, s)))
            else:
                line.append(cell(r.get(k), fmt))
        body.append(line)
    numeric = [any(row[i]["num"] for row in body) for i in range(len(columns))]
    return {"headers": [h for _, h in columns], "rows": body, "numeric": numeric}


def header(key: str) -> str:
    """``modelled_energy_pj`` -> ``modelled energy``; ``task_aware`` / ``task_agnostic`` -> Task-IL / Class-IL."""
    text = key.removesuffix("_pj").removesuffix("_bytes")
    text = text.replace("task_agnostic", "Class-IL").replace("task_aware", "Task-IL")
    return text.replace("_", " ")


def records(frame: pd.DataFrame) -> list[dict]:
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in frame.to_dict(orient="records")]


def svg(text: str | None) -> Markup | None:
    return Markup(text) if text else None
