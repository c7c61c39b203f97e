"""Plots of an incremental-learning run's results for the HTML report: accuracy matrices, accuracy vs
modelled energy, the sharing-point search, measured vs modelled time and speed-ups.

Accuracies (fractions in the results) are drawn in percent on one fixed 0-100 % scale, so two heatmaps
or two scatter plots can be compared by colour and position. Labels from results files are drawn
literally (:func:`energymodel.report.plotkit.label`). Each function returns ``<svg>...</svg>`` markup or None
when there is nothing to draw.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from energymodel.report.plotkit import figure as _figure
from energymodel.report.plotkit import joules as _joules
from energymodel.report.plotkit import label as _lit
from energymodel.report.plotkit import num as _num
from energymodel.report.plotkit import styled as _styled
from energymodel.report.plotkit import svg_of

__all__ = ["matrix_heatmap", "pareto_front", "calibration_plot", "strategies_plot", "timing_plot", "measured_plot",
           "ACCURACY_CMAP"]

#: the colour map of every accuracy heatmap, always over 0-100 %
ACCURACY_CMAP = "viridis"
_STRATEGY_COLOURS = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7",
                     "#9c755f", "#bab0ac"]


def _is_fraction(arr: np.ndarray) -> bool:
    finite = arr[np.isfinite(arr)]
    return bool(len(finite)) and finite.min() >= 0.0 and finite.max() <= 1.0


@_styled
def matrix_heatmap(name: str, tasks: Sequence, values: Sequence[Sequence[float | None]]) -> str:
    """A task x task matrix (accuracy on task j after learning task i); ``None`` cells are blank.

    Values in [0, 1] are accuracies: drawn as percent on the fixed 0-100 % scale shared by every heatmap
    of the report; any other matrix gets its own scale.
    """
    arr = np.array([[math.nan if v is None else float(v) for v in row] for row in values], dtype=float)
    n_r, n_c = arr.shape if arr.ndim == 2 else (0, 0)
    accuracy = _is_fraction(arr)
    if accuracy:
        arr = 100.0 * arr
    fig = _figure(min(1.2 + 0.55 * max(n_c, 1), 8.0) + 1.4, min(1.0 + 0.45 * max(n_r, 1), 7.0) + 0.6)
    ax = fig.add_subplot()
    lim = {"vmin": 0.0, "vmax": 100.0} if accuracy else {}
    im = ax.imshow(np.ma.masked_invalid(arr), cmap=ACCURACY_CMAP, aspect="auto", **lim)
    labels = [_lit(t) for t in tasks]
    if n_c <= 30:
        ax.set_xticks(np.arange(n_c), labels[:n_c] if len(labels) >= n_c else range(n_c), rotation=45, ha="right")
    if n_r <= 30:
        ax.set_yticks(np.arange(n_r), labels[:n_r] if len(labels) >= n_r else range(n_r))
    if n_r * n_c <= 100:
        finite = arr[np.isfinite(arr)]
        mid = 50.0 if accuracy else ((finite.min() + finite.max()) / 2 if len(finite) else 0)
        for i in range(n_r):
            for j in range(n_c):
                if math.isfinite(arr[i, j]):
                    ax.text(j, i, f"{arr[i, j]:.1f}" if accuracy else f"{arr[i, j]:.3g}", ha="center",
                            va="center", fontsize=7, color="white" if arr[i, j] < mid else "black")
    ax.grid(False)
    ax.set_xlabel("evaluated on")
    ax.set_ylabel("after learning")
    ax.set_title(_lit(name), fontsize=9)
    fig.colorbar(im, ax=ax, label="accuracy (%)" if accuracy else None)
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


def _label_points(ax, xs: Sequence[float], ys: Sequence[float], texts: Sequence[str]) -> None:
    """Short labels next to points; neighbours (in x order) alternate above / below so they do not collide."""
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    for n, i in enumerate(order):
        if math.isfinite(xs[i]) and math.isfinite(ys[i]):
            dy = 6 if n % 2 == 0 else -11
            ax.annotate(texts[i], (xs[i], ys[i]), textcoords="offset points", xytext=(4, dy), fontsize=7)


@_styled
def calibration_plot(curve: Sequence[dict], chosen_share: int | None = None,
                     oracle: Sequence[dict] | None = None) -> str:
    """The sharing-point search: validation accuracy (%) vs modelled training energy of each point tried,
    the Pareto front, the chosen point ringed; with ``oracle`` also the test accuracy of every point."""
    share = [r.get("share") for r in curve]
    e = np.array([_num(r.get("energy_pj")) for r in curve], dtype=float)
    a = 100.0 * np.array([_num(r.get("accuracy")) for r in curve], dtype=float)
    ok = np.array([r.get("within_tolerance") is True for r in curve], dtype=bool)
    oe = np.array([_num(r.get("energy_pj")) for r in oracle or []], dtype=float)
    oa = 100.0 * np.array([_num(r.get("accuracy")) for r in oracle or []], dtype=float)
    both = np.concatenate([e, oe])
    div, unit = _joules(both[np.isfinite(both)])
    fig = _figure(7.0, 3.8)
    ax = fig.add_subplot()
    if len(curve):
        ax.scatter(e[ok] / div, a[ok], color="#59a14f", label="within tolerance", zorder=3)
        ax.scatter(e[~ok] / div, a[~ok], color="#bab0ac", label="outside tolerance", zorder=3)
        front = pareto_front(e, a)
        if len(front):
            ax.plot(e[front] / div, a[front], "-", color="#4e79a7", lw=1.2, label="Pareto front", zorder=2)
        _label_points(ax, list(e / div), list(a), [f"k={s}" for s in share])
    if oracle:
        order = np.argsort(oe)
        ax.plot(oe[order] / div, oa[order], "D--", color="#b07aa1", ms=4, lw=1, label="oracle (test accuracy)",
                zorder=2)
    if chosen_share is not None and chosen_share in share:
        i = share.index(chosen_share)
        ax.scatter([e[i] / div], [a[i]], s=160, facecolors="none", edgecolors="#e15759", linewidths=2,
                   label=f"chosen (k={chosen_share})", zorder=4)
    ax.set_xlabel(f"modelled training energy ({unit})")
    ax.set_ylabel("Task-IL accuracy (%)")
    ax.set_title("Sharing-point search: accuracy vs energy per sharing point")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5))
    return svg_of(fig)


#: (column, kind, marker) of the accuracies a strategies plot draws
_SERIES = [("task_aware_accuracy", "Task-IL", "o"), ("task_agnostic_accuracy", "Class-IL", "s"),
           ("task_agnostic_uncalibrated_accuracy", "Class-IL, uncalibrated", "^")]


@_styled
def strategies_plot(rows: Sequence[dict]) -> str | None:
    """Accuracy (%) vs modelled training energy of each strategy: colour = strategy, marker = Task-IL /
    Class-IL, error bars = std over seeds; strategies are named in the legend (no labels to overlap)."""
    def energy(r):
        return _num(r.get("modelled_train_energy_pj", r.get("energy_pj")))

    pts = [(r, energy(r)) for r in rows]
    pts = [(r, e) for r, e in pts if math.isfinite(e)]
    series = [s for s in _SERIES if any(math.isfinite(_num(r.get(s[0]))) for r, _ in pts)]
    if not pts or not series:
        return None
    div, unit = _joules(np.array([e for _, e in pts]))
    fig = _figure(8.0, 3.8)
    ax = fig.add_subplot()
    from matplotlib.lines import Line2D

    handles = []
    for n, (r, e) in enumerate(pts):
        colour = _STRATEGY_COLOURS[n % len(_STRATEGY_COLOURS)]
        for col, _kind, marker in series:
            acc = _num(r.get(col))
            if math.isfinite(acc):
                std = _num(r.get(f"{col}_std"))
                ax.errorbar([e / div], [100 * acc], yerr=[100 * std] if math.isfinite(std) else None, fmt=marker,
                            color=colour, ms=6, capsize=3, zorder=3)
        handles.append(Line2D([], [], color=colour, marker="o", ls="", label=_lit(r.get("strategy", f"#{n + 1}"))))
    handles += [Line2D([], [], color="#555", marker=m, ls="", mfc="none", label=kind) for _, kind, m in series]
    ax.set_xlabel(f"modelled training energy ({unit})")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Accuracy vs modelled training energy per strategy")
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return svg_of(fig)


@_styled
def timing_plot(rows: Sequence[dict]) -> str | None:
    """Measured seconds against modelled MACs and modelled energy (points numbered as the table's rows, a
    least-squares line through 0)."""
    panels = [(k, lab) for k, lab in (("modelled_macs", "modelled MACs"), ("modelled_energy_pj", "modelled energy (pJ)"))
              if any(math.isfinite(_num(r.get(k))) for r in rows)]
    if not panels or not any(math.isfinite(_num(r.get("measured_seconds"))) for r in rows):
        return None
    fig = _figure(4.2 * len(panels), 3.4)
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (k, lab) in zip(axes, panels):
        xy = [(_num(r.get(k)), _num(r.get("measured_seconds")), str(i + 1)) for i, r in enumerate(rows)]
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
        _label_points(ax, list(x), list(y), [p[2] for p in xy])
        if (x > 0).any():
            slope = float((x * y).sum() / (x * x).sum())
            xs = np.linspace(0, x.max() * 1.05, 20)
            ax.plot(xs, slope * xs, "--", color="#e15759", lw=1, label="least squares through 0")
            ss_res = float(((y - slope * x) ** 2).sum())
            ss_tot = float(((y - y.mean()) ** 2).sum())
            if ss_tot > 0:
                ax.set_title(f"measured vs {lab}: R² = {1 - ss_res / ss_tot:.3f}", fontsize=9)
            ax.legend(loc="best")
        ax.set_xlabel(lab)
        ax.set_ylabel("measured time (s)")
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
    ax.set_ylabel("speed-up vs baseline (×)")
    ax.set_title("Measured vs modelled speed-up")
    ax.grid(axis="x", visible=False)
    ax.legend(loc="best")
    return svg_of(fig)
