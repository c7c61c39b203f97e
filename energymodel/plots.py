"""Plots for the HTML report: matplotlib figures rendered to inline SVG strings.

Figures are built with :class:`matplotlib.figure.Figure` directly (no pyplot, no global backend state),
so this is safe in any process; text is kept as SVG text and every ``id`` is made unique per figure so
that many SVGs can live in one HTML document. Each function returns the ``<svg>...</svg>`` markup.
"""

from __future__ import annotations

import functools
import io
import itertools
import math
import re
from collections.abc import Callable, Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

__all__ = [
    "svg_of", "layer_energy_plot", "sharing_plot", "sweep_lines_plot", "sweep_heatmap", "matrix_heatmap",
    "pareto_front", "calibration_plot", "timing_plot", "measured_plot", "strategies_plot", "ENERGY_PARTS",
]

#: (column, label, colour) of the energy split, bottom to top
ENERGY_PARTS = [
    ("energy_compute_pj", "compute", "#4e79a7"),
    ("energy_rf_pj", "RF", "#59a14f"),
    ("energy_sram_pj", "SRAM", "#f28e2b"),
    ("energy_dram_pj", "DRAM", "#e15759"),
]

_RC = {
    "svg.fonttype": "none",  # text stays text: small, searchable, escaped by matplotlib
    "svg.hashsalt": "energymodel",  # deterministic ids
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.fontsize": 8,
    "legend.frameon": False,
}
_counter = itertools.count(1)
_ID = re.compile(r'\bid="([^"]+)"')


def _styled(fn: Callable[..., str | None]) -> Callable[..., str | None]:
    """Run a plotting function under the report's rc settings (read when artists are made and saved)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(_RC):
            return fn(*args, **kwargs)

    return wrapper


def _figure(w: float, h: float) -> Figure:
    return Figure(figsize=(w, h), layout="constrained")


def svg_of(fig: Figure, prefix: str | None = None) -> str:
    """``fig`` as an inline ``<svg>`` element: no XML prolog/DOCTYPE, no metadata, ids prefixed uniquely."""
    buf = io.StringIO()
    with matplotlib.rc_context(_RC):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    prefix = prefix or f"f{next(_counter)}"
    ids = set(_ID.findall(text))
    if ids:
        text = _ID.sub(lambda m: f'id="{prefix}-{m.group(1)}"', text)
        text = re.sub(r'url\(#([^)]+)\)', lambda m: f"url(#{prefix}-{m.group(1)})" if m.group(1) in ids else m.group(0), text)
        text = re.sub(r'href="#([^"]+)"', lambda m: f'href="#{prefix}-{m.group(1)}"' if m.group(1) in ids else m.group(0),
                      text)
    # scale down with the page, keep the aspect ratio
    text = re.sub(r'^<svg ', '<svg class="plot" preserveAspectRatio="xMidYMid meet" ', text, count=1)
    return text.strip()


def _lit(text) -> str:
    """User text shown literally (no mathtext): escape ``$``."""
    return str(text).replace("$", r"\$")


def _eng(v: float) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g}{suffix}"
    return f"{v:.3g}"


def _joules(ax_values: np.ndarray) -> tuple[float, str]:
    """A divisor and unit to show pJ values in J / mJ / uJ."""
    top = float(np.nanmax(np.abs(ax_values))) if len(ax_values) else 0.0
    for div, unit in ((1e18, "MJ"), (1e15, "kJ"), (1e12, "J"), (1e9, "mJ"), (1e6, "µJ"), (1e3, "nJ")):
        if top >= div:
            return div, unit
    return 1.0, "pJ"


# -- per-layer costs --------------------------------------------------------------------------------


@_styled
def layer_energy_plot(layers: pd.DataFrame, title: str = "Energy per layer, one training step") -> str:
    """Horizontal stacked bars: energy of each layer split into compute / RF / SRAM / DRAM."""
    n = len(layers)
    h = min(max(2.2, 0.16 * n + 1.0), 40.0)
    fig = _figure(8.5, h)
    ax = fig.add_subplot()
    total = layers["energy_pj"].to_numpy(dtype=float)
    div, unit = _joules(total)
    y = np.arange(n)
    left = np.zeros(n)
    for col, label, colour in ENERGY_PARTS:
        v = layers[col].to_numpy(dtype=float) / div
        ax.barh(y, v, left=left, color=colour, label=label, height=0.8)
        left += v
    ax.set_yticks(y, [_lit(s) for s in layers["name"]], fontsize=6 if n > 40 else 7.5)
    ax.invert_yaxis()
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_xlabel(f"energy ({unit})")
    ax.set_title(_lit(title))
    ax.grid(axis="y", visible=False)
    ax.legend(loc="lower right", ncols=4)
    return svg_of(fig)


# -- sharing comparison -------------------------------------------------------------------------------


@_styled
def sharing_plot(compare: pd.DataFrame) -> str:
    """Training energy (stacked by part) and savings vs regular / retraining against the sharing fraction."""
    ps = compare[compare["strategy"] == "partial-sharing"].sort_values("share")
    ret = compare[compare["strategy"] == "full-retraining"]
    fig = _figure(8.5, 3.6)
    ax1, ax2 = fig.subplots(1, 2)
    x = ps["fraction"].to_numpy(dtype=float)
    div, unit = _joules(np.concatenate([ps["energy_pj"].to_numpy(dtype=float), ret["energy_pj"].to_numpy(dtype=float)]))
    width = 0.8 * (np.min(np.diff(x)) if len(x) > 1 else 0.1)
    bottom = np.zeros(len(ps))
    for col, label, colour in ENERGY_PARTS:
        v = ps[col].to_numpy(dtype=float) / div
        ax1.bar(x, v, width=width, bottom=bottom, color=colour, label=label)
        bottom += v
    if len(ret):
        ax1.axhline(float(ret["energy_pj"].iloc[0]) / div, color="#555", ls="--", lw=1, label="full retraining")
    ax1.set_xlabel("sharing fraction (share of conv/linear layers frozen)")
    ax1.set_ylabel(f"training energy of the new task ({unit})")
    ax1.set_title("Training energy")
    ax1.legend(fontsize=7)
    ax2.plot(x, ps["savings_energy_vs_regular"], "o-", color="#4e79a7", label="energy vs regular incremental")
    ax2.plot(x, ps["savings_macs_vs_regular"], "s--", color="#76b7b2", label="MACs vs regular incremental")
    ax2.plot(x, ps["savings_energy_vs_retraining"], "^-", color="#e15759", label="energy vs full retraining")
    ax2.axhline(1.0, color="#555", lw=0.8)
    sav = ps[["savings_energy_vs_regular", "savings_energy_vs_retraining"]].to_numpy(dtype=float)
    sav = sav[np.isfinite(sav) & (sav > 0)]
    if len(sav) and sav.max() / sav.min() > 30:
        ax2.set_yscale("log")
    ax2.set_xlabel("sharing fraction")
    ax2.set_ylabel("savings (x, baseline / strategy)")
    ax2.set_title("Savings")
    ax2.legend(fontsize=7)
    return svg_of(fig)


# -- sweeps ------------------------------------------------------------------------------------------


def _share_colours(shares: Sequence[int], fractions: Sequence[float]):
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    norm = Normalize(0.0, 1.0)
    return {s: cmap(norm(f)) for s, f in zip(shares, fractions)}, cmap, norm


@_styled
def sweep_lines_plot(frame: pd.DataFrame, key: str, *, against: str = "regular", target: float | None = None,
                     fixed: dict[str, float] | None = None, breakeven: pd.DataFrame | None = None,
                     xlabel: str | None = None, top_key: str | None = None) -> str:
    """Savings vs ``key``, one line per sharing point coloured by its fraction (other keys held at ``fixed``).

    ``top_key``: a column proportional to ``key`` on the plotted lines (e.g. ``dram`` for the DRAM/MAC
    ratio) shown as a second x axis on top.
    """
    df = frame
    for k, v in (fixed or {}).items():
        df = df[np.isclose(df[k].to_numpy(dtype=float), v)]
    col = f"savings_vs_{against}"
    shares = sorted(df["share"].unique())
    fr = df.groupby("share")["fraction"].first()
    colours, cmap, norm = _share_colours(shares, [fr[s] for s in shares])
    fig = _figure(7.5, 3.6)
    ax = fig.add_subplot()
    for s in shares:
        g = df[df["share"] == s].sort_values(key)
        ax.plot(g[key], g[col], "-", marker="o" if len(g) <= 25 else None, ms=3, color=colours[s], lw=1.3)
    if target is not None:
        ax.axhline(target, color="#e15759", lw=1, ls="--", label=f"target {target:g}x")
    if breakeven is not None and len(breakeven) and breakeven["key"].iloc[0] == key:
        be = breakeven.dropna(subset=["breakeven"])
        for k, v in (fixed or {}).items():
            if k in be:
                be = be[np.isclose(be[k].to_numpy(dtype=float), v)]
        if len(be):
            ax.plot(be["breakeven"], np.full(len(be), be["target"].iloc[0]), "kx", ms=7, label="break-even")
    logx = df[key].min() > 0 and df[key].max() / max(df[key].min(), 1e-300) > 50
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(_lit(xlabel or key))
    if top_key is not None and top_key in df:
        x = df[key].to_numpy(dtype=float)
        t = df[top_key].to_numpy(dtype=float)
        ok = x > 0
        if ok.any():
            scale = float(np.median(t[ok] / x[ok]))
            if scale > 0 and np.allclose(t[ok], scale * x[ok], rtol=1e-9):
                top = ax.secondary_xaxis("top", functions=(lambda v: v * scale, lambda v: v / scale))
                top.set_xlabel(_lit(f"{top_key} (pJ per access, table entry)" if top_key in ("dram", "sram", "rf")
                                    else top_key))
    ax.set_ylabel(f"savings vs {'regular incremental' if against == 'regular' else 'full retraining'} (x)")
    if top_key is None:
        ax.set_title(_lit(f"Savings vs {xlabel or key}"))
    from matplotlib.cm import ScalarMappable

    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="sharing fraction")
    if target is not None:
        ax.legend(loc="best")
    return svg_of(fig)


@_styled
def sweep_heatmap(frame: pd.DataFrame, kx: str, ky: str, share: int, *, against: str = "regular",
                  fixed: dict[str, float] | None = None) -> str:
    """Savings of sharing point ``share`` over the grid of two varied keys."""
    df = frame[frame["share"] == share]
    for k, v in (fixed or {}).items():
        df = df[np.isclose(df[k].to_numpy(dtype=float), v)]
    col = f"savings_vs_{against}"
    piv = df.pivot_table(index=ky, columns=kx, values=col, aggfunc="mean")
    fig = _figure(7.0, 4.0)
    ax = fig.add_subplot()
    im = ax.imshow(piv.to_numpy(dtype=float), origin="lower", aspect="auto", cmap="viridis")
    _ticks(ax, "x", piv.columns.to_numpy())
    _ticks(ax, "y", piv.index.to_numpy())
    ax.grid(False)
    ax.set_xlabel(_lit(kx))
    ax.set_ylabel(_lit(ky))
    frac = float(frame.loc[frame["share"] == share, "fraction"].iloc[0]) if (frame["share"] == share).any() else math.nan
    ax.set_title(f"Savings vs {against} at sharing point {share} (fraction {frac:.2f})")
    fig.colorbar(im, ax=ax, label="savings (x)")
    return svg_of(fig)


def _ticks(ax, axis: str, values: np.ndarray, most: int = 8) -> None:
    n = len(values)
    step = max(1, math.ceil(n / most))
    idx = np.arange(0, n, step)
    labels = [f"{v:.4g}" if isinstance(v, (float, np.floating)) else str(v) for v in values[idx]]
    (ax.set_xticks if axis == "x" else ax.set_yticks)(idx, labels)


# -- engine results -----------------------------------------------------------------------------------


@_styled
def matrix_heatmap(name: str, tasks: Sequence, values: Sequence[Sequence[float | None]]) -> str:
    """A task x task matrix (e.g. accuracy on task j after learning task i); ``None`` cells are blank."""
    arr = np.array([[math.nan if v is None else float(v) for v in row] for row in values], dtype=float)
    n_r, n_c = arr.shape if arr.ndim == 2 else (0, 0)
    fig = _figure(min(1.2 + 0.55 * max(n_c, 1), 8.0) + 1.2, min(1.0 + 0.45 * max(n_r, 1), 7.0) + 0.6)
    ax = fig.add_subplot()
    im = ax.imshow(np.ma.masked_invalid(arr), cmap="viridis", aspect="auto")
    labels = [_lit(t) for t in tasks]
    if n_c <= 30:
        ax.set_xticks(np.arange(n_c), labels[:n_c] if len(labels) >= n_c else range(n_c), rotation=45, ha="right")
    if n_r <= 30:
        ax.set_yticks(np.arange(n_r), labels[:n_r] if len(labels) >= n_r else range(n_r))
    if n_r * n_c <= 100:
        finite = arr[np.isfinite(arr)]
        mid = (finite.min() + finite.max()) / 2 if len(finite) else 0
        for i in range(n_r):
            for j in range(n_c):
                if math.isfinite(arr[i, j]):
                    ax.text(j, i, f"{arr[i, j]:.3g}", ha="center", va="center", fontsize=7,
                            color="white" if arr[i, j] < mid else "black")
    ax.grid(False)
    ax.set_title(_lit(name))
    fig.colorbar(im, ax=ax)
    return svg_of(fig)


def pareto_front(energy: Sequence[float], accuracy: Sequence[float]) -> np.ndarray:
    """Indices of points not dominated (no other point has lower-or-equal energy and higher accuracy), by energy."""
    e = np.asarray(energy, dtype=float)
    a = np.asarray(accuracy, dtype=float)
    order = np.lexsort((-a, e))
    front, best = [], -math.inf
    for i in order:
        if math.isfinite(e[i]) and math.isfinite(a[i]) and a[i] > best:
            front.append(i)
            best = a[i]
    return np.array(front, dtype=int)


@_styled
def calibration_plot(curve: Sequence[dict], chosen_share: int | None = None) -> str:
    """Accuracy vs energy of each sharing point tried; Pareto front drawn, the chosen point marked."""
    share = [r.get("share") for r in curve]
    e = np.array([_num(r.get("energy_pj")) for r in curve])
    a = np.array([_num(r.get("accuracy")) for r in curve])
    ok = np.array([r.get("within_tolerance") is True for r in curve])
    div, unit = _joules(e[np.isfinite(e)])
    fig = _figure(7.0, 3.8)
    ax = fig.add_subplot()
    ax.scatter(e[ok] / div, a[ok], color="#59a14f", label="within tolerance", zorder=3)
    ax.scatter(e[~ok] / div, a[~ok], color="#bab0ac", label="outside tolerance", zorder=3)
    front = pareto_front(e, a)
    if len(front):
        ax.plot(e[front] / div, a[front], "-", color="#4e79a7", lw=1.2, label="Pareto front", zorder=2)
    for i, s in enumerate(share):
        if math.isfinite(e[i]) and math.isfinite(a[i]):
            frac = curve[i].get("fraction")
            lab = f"k={s}" + (f" ({frac:.2f})" if isinstance(frac, (int, float)) else "")
            ax.annotate(lab, (e[i] / div, a[i]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if chosen_share is not None and chosen_share in share:
        i = share.index(chosen_share)
        ax.scatter([e[i] / div], [a[i]], s=160, facecolors="none", edgecolors="#e15759", linewidths=2,
                   label=f"chosen (k={chosen_share})", zorder=4)
    ax.set_xlabel(f"modelled training energy ({unit})")
    ax.set_ylabel("accuracy")
    ax.set_title("Calibration: accuracy vs energy per sharing point")
    ax.legend(loc="best")
    return svg_of(fig)


@_styled
def strategies_plot(rows: Sequence[dict]) -> str | None:
    """Accuracy vs modelled energy of each strategy (task-aware and task-agnostic), when both are present."""
    def energy(r):
        return _num(r.get("modelled_train_energy_pj", r.get("energy_pj")))

    pts = [(r, energy(r)) for r in rows]
    pts = [(r, e) for r, e in pts if math.isfinite(e)]
    series = [("task_aware_accuracy", "task-aware", "o", "#4e79a7"),
              ("task_agnostic_accuracy", "task-agnostic", "s", "#f28e2b"),
              ("task_agnostic_uncalibrated_accuracy", "task-agnostic (uncalibrated)", "^", "#bab0ac")]
    if not pts or not any(math.isfinite(_num(r.get(c))) for r, _ in pts for c, *_ in series):
        return None
    div, unit = _joules(np.array([e for _, e in pts]))
    fig = _figure(7.0, 3.6)
    ax = fig.add_subplot()
    for col, label, marker, colour in series:
        xy = [(e / div, _num(r.get(col))) for r, e in pts if math.isfinite(_num(r.get(col)))]
        if xy:
            ax.scatter(*zip(*xy), marker=marker, color=colour, label=label, zorder=3)
    for r, e in pts:
        acc = next((_num(r.get(c)) for c, *_ in series if math.isfinite(_num(r.get(c)))), math.nan)
        if math.isfinite(acc):
            ax.annotate(_lit(r.get("strategy", "")), (e / div, acc), textcoords="offset points", xytext=(4, 4),
                        fontsize=7)
    ax.set_xlabel(f"modelled training energy ({unit})")
    ax.set_ylabel("accuracy")
    ax.set_title("Accuracy vs modelled energy per strategy")
    ax.legend(loc="best")
    return svg_of(fig)


@_styled
def timing_plot(rows: Sequence[dict]) -> str | None:
    """Measured seconds against modelled MACs and modelled energy (one point per label, fit through 0)."""
    panels = [(k, lab) for k, lab in (("modelled_macs", "modelled MACs"), ("modelled_energy_pj", "modelled energy (pJ)"))
              if any(math.isfinite(_num(r.get(k))) for r in rows)]
    if not panels or not any(math.isfinite(_num(r.get("measured_seconds"))) for r in rows):
        return None
    fig = _figure(4.2 * len(panels), 3.4)
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (k, lab) in zip(axes, panels):
        xy = [(_num(r.get(k)), _num(r.get("measured_seconds")), _lit(r.get("label", ""))) for r in rows]
        xy = [p for p in xy if math.isfinite(p[0]) and math.isfinite(p[1])]
        if not xy:
            continue
        x = np.array([p[0] for p in xy])
        y = np.array([p[1] for p in xy])
        if k == "modelled_energy_pj":
            div, unit = _joules(x)
            x, lab = x / div, f"modelled energy ({unit})"
        elif x.max() >= 1e3:
            div, unit = next((d, u) for d, u in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1, "")) if x.max() >= d)
            x, lab = x / div, f"modelled {unit}MACs"
        ax.scatter(x, y, color="#4e79a7", zorder=3)
        for xi, (_, yi, name) in zip(x, xy):
            ax.annotate(name, (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7)
        if (x > 0).any():
            slope = float((x * y).sum() / (x * x).sum())
            xs = np.linspace(0, x.max() * 1.05, 20)
            ax.plot(xs, slope * xs, "--", color="#e15759", lw=1, label="least squares through 0")
            ss_res = float(((y - slope * x) ** 2).sum())
            ss_tot = float(((y - y.mean()) ** 2).sum())
            if ss_tot > 0:
                ax.set_title(f"measured vs {lab}: R² = {1 - ss_res / ss_tot:.3f}", fontsize=9)
            ax.legend(loc="upper left")
        ax.set_xlabel(lab)
        ax.set_ylabel("measured seconds")
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
    return svg_of(fig)


@_styled
def measured_plot(rows: Sequence[dict]) -> str | None:
    """Grouped bars per row: measured speed-up and the modelled speed-ups (MACs, energy)."""
    series = [("speedup_measured", "measured (time per epoch)", "#4e79a7"),
              ("speedup_modelled_macs", "modelled (MACs)", "#76b7b2"),
              ("speedup_modelled_energy", "modelled (energy)", "#f28e2b")]
    series = [s for s in series if any(math.isfinite(_num(r.get(s[0]))) for r in rows)]
    if not rows or not series:
        return None
    labels = [_lit(r.get("label", i)) for i, r in enumerate(rows)]
    x = np.arange(len(rows))
    w = 0.8 / len(series)
    fig = _figure(max(5.0, min(0.9 * len(rows) + 2.5, 10.0)), 3.6)
    ax = fig.add_subplot()
    for i, (col, lab, colour) in enumerate(series):
        v = np.array([_num(r.get(col)) for r in rows])
        ax.bar(x + (i - (len(series) - 1) / 2) * w, np.nan_to_num(v), width=w, color=colour, label=lab)
    ax.axhline(1.0, color="#555", lw=0.8)
    ax.set_xticks(x, labels, rotation=30 if len(rows) > 4 else 0, ha="right" if len(rows) > 4 else "center")
    ax.set_ylabel("speed-up vs baseline (x)")
    ax.set_title("Measured vs modelled speed-up")
    ax.grid(axis="x", visible=False)
    ax.legend(loc="best")
    return svg_of(fig)


def _num(v) -> float:
    if isinstance(v, bool) or v is None:
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan
