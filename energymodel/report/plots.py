"""Plots for the HTML report: matplotlib figures rendered to inline SVG strings.

Figures are built with :class:`matplotlib.figure.Figure` directly (no pyplot, no global backend state),
so this is safe in any process; text is kept as SVG text, never parsed as maths, and every ``id`` is made
unique per figure so that many SVGs can live in one HTML document (:mod:`energymodel.report.plotkit`). Each
function returns the ``<svg>...</svg>`` markup. This module: per-layer costs, the sharing comparison and
sweeps; the engine's results (accuracy, search, timings) are in :mod:`energymodel.report.run_plots` and
re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from matplotlib.colors import Normalize
from matplotlib.ticker import FuncFormatter, LogLocator

from energymodel.report.plotkit import figure as _figure
from energymodel.report.plotkit import joules as _joules
from energymodel.report.plotkit import label as _lit
from energymodel.report.plotkit import styled as _styled
from energymodel.report.plotkit import svg_of
from energymodel.report.run_plots import (
    calibration_plot,
    matrix_heatmap,
    measured_plot,
    pareto_front,
    strategies_plot,
    timing_plot,
)

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
    ax2.set_ylabel("savings (×, baseline / strategy)")
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
                     xlabel: str | None = None, top_key: str | None = None, top_label: str | None = None,
                     tick_format: Callable[[float], str] | None = None) -> str:
    """Savings vs ``key``, one line per sharing point coloured by its fraction (other keys held at ``fixed``).

    ``top_key``: a column proportional to ``key`` on the plotted lines (e.g. ``dram`` for the DRAM/MAC
    ratio) shown as a second x axis on top, labelled ``top_label``; ``tick_format`` writes the x ticks
    (e.g. bytes as KiB / MiB).
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
        ax.axhline(target, color="#e15759", lw=1, ls="--", label=f"target {target:g}×")
    if breakeven is not None and len(breakeven) and breakeven["key"].iloc[0] == key:
        be = breakeven.dropna(subset=["breakeven"])
        for k, v in (fixed or {}).items():
            if k in be:
                be = be[np.isclose(be[k].to_numpy(dtype=float), v)]
        if len(be):
            ax.plot(be["breakeven"], np.full(len(be), be["target"].iloc[0]), "kx", ms=7, label="break-even")
    logx = df[key].min() > 0 and df[key].max() / max(df[key].min(), 1e-300) > 50
    if logx:  # bytes on powers of 4 (64 KiB, 256 KiB, 1 MiB ...), anything else on powers of 10
        ax.set_xscale("log", base=2 if key.endswith("bytes") else 10)
        if key.endswith("bytes"):
            ax.xaxis.set_major_locator(LogLocator(base=4))
    ax.set_xlabel(_lit(xlabel or key))
    if tick_format is not None:
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: tick_format(v)))
    if top_key is not None and top_key in df:
        x = df[key].to_numpy(dtype=float)
        t = df[top_key].to_numpy(dtype=float)
        ok = x > 0
        if ok.any():
            scale = float(np.median(t[ok] / x[ok]))
            if scale > 0 and np.allclose(t[ok], scale * x[ok], rtol=1e-9):
                top = ax.secondary_xaxis("top", functions=(lambda v: v * scale, lambda v: v / scale))
                top.set_xlabel(_lit(top_label or top_key))
    ax.set_ylabel(f"savings vs {'regular incremental' if against == 'regular' else 'full retraining'} (×)")
    if top_key is None:
        ax.set_title(_lit(f"Savings vs {(xlabel or key).split(' (')[0]}"))
    from matplotlib.cm import ScalarMappable

    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="sharing fraction")
    if target is not None:
        ax.legend(loc="best")
    return svg_of(fig)


@_styled
def sweep_heatmap(frame: pd.DataFrame, kx: str, ky: str, share: int, *, against: str = "regular",
                  fixed: dict[str, float] | None = None, xlabel: str | None = None, ylabel: str | None = None,
                  tick_format: dict[str, Callable[[float], str]] | None = None) -> str:
    """Savings of sharing point ``share`` over the grid of two varied keys (axes ``xlabel`` / ``ylabel``,
    tick text by ``tick_format[key]`` where given)."""
    df = frame[frame["share"] == share]
    for k, v in (fixed or {}).items():
        df = df[np.isclose(df[k].to_numpy(dtype=float), v)]
    col = f"savings_vs_{against}"
    piv = df.pivot_table(index=ky, columns=kx, values=col, aggfunc="mean")
    fig = _figure(7.0, 4.0)
    ax = fig.add_subplot()
    im = ax.imshow(piv.to_numpy(dtype=float), origin="lower", aspect="auto", cmap="viridis")
    fmts = tick_format or {}
    _ticks(ax, "x", piv.columns.to_numpy(), fmt=fmts.get(kx))
    _ticks(ax, "y", piv.index.to_numpy(), fmt=fmts.get(ky))
    ax.grid(False)
    ax.set_xlabel(_lit(xlabel or kx))
    ax.set_ylabel(_lit(ylabel or ky))
    frac = float(frame.loc[frame["share"] == share, "fraction"].iloc[0]) if (frame["share"] == share).any() else math.nan
    ax.set_title(f"Savings vs {'regular incremental' if against == 'regular' else 'full retraining'} at sharing "
                 f"point {share} (fraction {frac:.2f})")
    fig.colorbar(im, ax=ax, label="savings (×)")
    return svg_of(fig)


def _ticks(ax, axis: str, values: np.ndarray, most: int = 8, fmt: Callable[[float], str] | None = None) -> None:
    n = len(values)
    step = max(1, math.ceil(n / most))
    idx = np.arange(0, n, step)
    labels = [fmt(float(v)) if fmt is not None else f"{v:.4g}" if isinstance(v, (float, np.floating)) else str(v)
              for v in values[idx]]
    (ax.set_xticks if axis == "x" else ax.set_yticks)(idx, labels)
