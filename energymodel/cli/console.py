"""Readable console output: engineering notation, a header, a tree of module names, a summary line.

Counts are shown with SI prefixes and four significant digits (``18.69 M`` MACs), energies in joules
(``96.12 µJ``; stored in pJ), bytes in IEC units (``1 MiB`` = 2**20 bytes, as in the HTML report). Every
column header names its unit. JSON and CSV outputs keep exact numbers.

:func:`tree_rows` lays the per-call rows out as a tree like torchinfo's: one row per container module with
the totals of everything under it, its children indented below; ``depth`` keeps the rows down to that depth
(``layer1`` and ``layer1.0`` at depth 2, each with its total); zero-cost view ops (``view``, ``transpose``,
eval-mode dropout ...) are folded away unless asked for.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

__all__ = ["eng", "energy", "ibytes", "header", "summary_line", "by_module", "unmodelled_by_kind", "layer_view",
           "integer_columns", "DISPLAY_COLUMNS", "tree_rows", "text_table", "profile_table"]

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


def ibytes(value: Any) -> str:
    """Bytes in IEC units with 4 significant digits: ``ibytes(1048576)`` = ``"1 MiB"``, ``ibytes(1500)`` =
    ``"1.465 KiB"``, ``ibytes(12)`` = ``"12 B"``."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    v = float(value)
    for scale, unit in ((2**50, "PiB"), (2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if abs(v) >= scale:
            return f"{v / scale:.4g} {unit}"
    return f"{v:.4g} B"


def energy(pj: float) -> str:
    """Energy given in pJ, shown in joules with a prefix: ``energy(96120000.0)`` = ``"96.12 µJ"``."""
    return eng(pj * 1e-12, "J")


def header(*, model: str, kind: str, input_shape: Sequence[int], batch: int, mode: str, table: Any) -> str:
    """``model smallcnn (BlockNet) · input 1x28x28 · batch 1 · mode inference · table 45nm (fp32, 32-bit words)``."""
    shape = input_shape.text() if hasattr(input_shape, "text") else "x".join(map(str, input_shape))
    return (f"model {model} ({kind}) · input {shape} · batch {batch} · mode {mode} · "
            f"table {table.name} ({table.datatype}, {table.word_bits}-bit words)")


def summary_line(totals: dict[str, Any], batch: int, mode: str = "training") -> str:
    """``total for the batch of 2: params 468 k · MACs 37.38 M · energy 192.2 µJ (per sample: MACs 18.69 M,
    energy 96.12 µJ)``; in training the trainable parameters are named too."""
    per = max(int(batch), 1)
    macs = totals.get("macs", totals.get("macs_forward", 0.0))
    params = f"params {eng(totals['params'])}"
    if mode == "training":
        params += f" ({eng(totals.get('trainable_params', 0))} trainable)"
    return (f"total for the batch of {per}: {params} · MACs {eng(macs)} · energy {energy(totals['energy_pj'])} "
            f"(per sample: MACs {eng(macs / per)}, energy {energy(totals['energy_pj'] / per)})")


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


def _split(name: str) -> tuple[list[str], str]:
    """``a.b.c#2`` -> (``["a", "a.b"]``, ``"c#2"``); ``a.b.(view)`` -> (``["a", "a.b"]``, ``"(view)"``)."""
    base, _, call = name.partition("#")
    suffix = f"#{call}" if call else ""
    if base.startswith("("):
        return [], base + suffix
    if ".(" in base:
        path, op = base.split(".(", 1)
        parts = path.split(".")
        return [".".join(parts[: i + 1]) for i in range(len(parts))], f"({op}{suffix}"
    parts = base.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts) - 1)], parts[-1] + suffix


_COSTS = ("params", "macs", "add_ops", "mult_ops", "cmp_ops", "sram_accesses", "dram_accesses", "energy_pj")


def tree_rows(layers: pd.DataFrame, modules: dict[str, tuple] | None = None, *, depth: int | None = None,
              show_views: bool = False) -> tuple[list[dict[str, Any]], int]:
    """The rows of the console tree and the number of zero-cost rows folded away (see the module docstring).

    Each row: ``name`` (indented label), ``path``, ``depth``, ``kind``, ``output`` (per-sample shape) and the
    summed numeric columns of ``layers``; a container row sums everything under it."""
    modules = modules or {}
    numeric = [c for c in layers.columns if pd.api.types.is_numeric_dtype(layers[c])
               and not pd.api.types.is_bool_dtype(layers[c])]
    records = layers.to_dict(orient="records")
    zero = [all(float(r.get(c, 0) or 0) == 0 for c in _COSTS) and bool(r.get("modelled", True)) for r in records]
    out: list[dict[str, Any]] = []
    index: dict[str, dict[str, Any]] = {}
    folded = 0

    def node(path: str, level: int, kind: str, shape: str) -> dict[str, Any]:
        row = index.get(path)
        if row is None:
            label = path.rsplit(".", 1)[-1]
            row = {"path": path, "depth": level, "label": label, "kind": kind, "output": shape, "visible": False,
                   "trainable": False, "modelled": True, **{c: 0.0 for c in numeric}}
            index[path] = row
            out.append(row)
        return row

    for r, is_zero in zip(records, zero):
        parents, label = _split(str(r["name"]))
        shown = show_views or not is_zero
        folded += 0 if shown else 1
        chain = parents if depth is None else parents[:depth]
        for level, p in enumerate(chain, 1):
            kind, shape = modules.get(p, ("", None))
            row = node(p, level, kind, "×".join(map(str, shape)) if shape else "")
            row["visible"] |= shown
            row["trainable"] |= bool(r.get("trainable"))
            row["modelled"] &= bool(r.get("modelled", True))
            for c in numeric:
                row[c] += float(r.get(c, 0) or 0)
        if depth is not None and len(parents) >= depth:
            continue  # summed into its ancestor at the depth asked for
        leaf = {"path": str(r["name"]), "depth": len(parents) + 1, "label": label, "kind": r.get("kind", ""),
                "output": r.get("output_shape", ""), "visible": shown, "trainable": bool(r.get("trainable")),
                "modelled": bool(r.get("modelled", True)), **{c: float(r.get(c, 0) or 0) for c in numeric}}
        out.append(leaf)
    rows = [r for r in out if r["visible"]]
    for r in rows:
        r["name"] = "  " * (r["depth"] - 1) + r["label"]
    return rows, folded


def text_table(rows: list[dict[str, Any]], columns: list[tuple[str, str, Any]]) -> str:
    """A plain-text table: ``columns`` = ``(key, header, formatter or None)``; text columns (no formatter) are
    left-aligned, formatted numbers right-aligned."""
    cells = [[h for _, h, _ in columns]]
    for r in rows:
        cells.append([str(r.get(k, "")) if f is None else f(r.get(k)) for k, _, f in columns])
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = []
    for row in cells:
        parts = [c.ljust(w) if f is None else c.rjust(w) for c, w, (_, _, f) in zip(row, widths, columns)]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines) + "\n"


def profile_table(prof: Any, *, depth: int | None = None, show_views: bool = False) -> str:
    """The console view of a :class:`~energymodel.analysis.profile.Profile`: a header saying what the rows count,
    the tree of modules with units in every column header, and the summary line."""
    settings = prof.settings
    batch, mode = int(settings["batch"]), settings["mode"]
    rows, folded = tree_rows(prof.layers, prof.counts.modules, depth=depth, show_views=show_views)
    for r in rows:
        if not r["modelled"]:
            r["kind"] = f"{r['kind']} (no rule)"
        r["trains"] = "yes" if r["trainable"] else "frozen" if r.get("params") else ""
    columns: list[tuple[str, str, Any]] = [("name", "module", None), ("kind", "kind", None)]
    if mode == "training":
        columns.append(("trains", "trains", None))
    columns += [("output", "output (per sample)", None), ("params", "params", eng), ("macs", "MACs", eng),
                ("sram_accesses", f"SRAM ({prof.table.word_bits}-bit words)", eng),
                ("dram_accesses", f"DRAM ({prof.table.word_bits}-bit words)", eng), ("energy_pj", "energy (J)", energy)]
    if prof.memory is not None:
        columns.append(("saved_bytes", "saved for backward", ibytes))
    what = "one training step" if mode == "training" else "one inference pass"
    note = (f"rows: {what} of a batch of {batch} (MACs, accesses, energy for the whole batch); "
            f"output shapes per sample")
    if folded:
        note += f"; {folded} zero-cost view op{'s' if folded > 1 else ''} folded away (--show-views shows them)"
    text = note + "\n\n" + text_table(rows, columns) + "\n" + summary_line(prof.totals, batch, mode) + "\n"
    if prof.memory is not None:
        text += memory_line(prof.memory) + "\n"
    return text


def memory_line(fp: Any) -> str:
    """``training step memory: peak 50.97 MiB in the backward pass = resident 2.5 MiB (weights ..., optimizer
    state ..., batch ...) + the step's own 48.5 MiB (saved activations 47.5 MiB, gradients ...)``."""
    own = fp.peak - fp.resident
    return (f"training step memory: peak {ibytes(fp.peak)} in the {fp.phase}"
            f"{' pass' if fp.phase != 'optimizer step' else ''} = weights {ibytes(fp.weights)} + optimizer state "
            f"{ibytes(fp.optimizer_state)} + buffers {ibytes(fp.buffers)} + the batch {ibytes(fp.inputs)} + "
            f"{ibytes(own)} the step allocates (saved activations {ibytes(fp.saved)}; parameter gradients "
            f"{ibytes(fp.gradients)} by the end of the backward pass)")
