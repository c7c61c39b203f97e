"""Shared plumbing of the report's plots: rc settings, figures, SVG output, labels, units.

Figures are built with :class:`matplotlib.figure.Figure` directly (no pyplot, no global backend state).
Text is never parsed as maths (``text.parse_math`` off, and off again on every text artist before
saving), so a label such as ``$5 model`` or ``$\\alpha$`` from a results file is drawn literally and can
never make matplotlib raise.
"""

from __future__ import annotations

import functools
import io
import itertools
import math
import re
from collections.abc import Callable

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.text import Text

__all__ = ["svg_of", "styled", "figure", "label", "joules", "num"]

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
    "text.parse_math": False,  # labels come from results files: "$" is a dollar sign, never maths
}
_counter = itertools.count(1)
_ID = re.compile(r'\bid="([^"]+)"')


def styled(fn: Callable[..., str | None]) -> Callable[..., str | None]:
    """Run a plotting function under the report's rc settings (read when artists are made and saved)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(_RC):
            return fn(*args, **kwargs)

    return wrapper


def figure(w: float, h: float) -> Figure:
    return Figure(figsize=(w, h), layout="constrained")


def svg_of(fig: Figure, prefix: str | None = None) -> str:
    """``fig`` as an inline ``<svg>`` element: no XML prolog/DOCTYPE, no metadata, ids prefixed uniquely."""
    for t in fig.findobj(Text):  # also titles and labels set outside the rc context
        t.set_parse_math(False)
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


def label(text) -> str:
    """User text for a figure, shown literally: maths parsing is off (see the module docstring), so a
    ``$`` is kept as it is (escaping it too would show the backslash)."""
    return str(text)


def joules(ax_values: np.ndarray) -> tuple[float, str]:
    """A divisor and unit to show pJ values in J / mJ / uJ."""
    top = float(np.nanmax(np.abs(ax_values))) if len(ax_values) else 0.0
    for div, unit in ((1e18, "MJ"), (1e15, "kJ"), (1e12, "J"), (1e9, "mJ"), (1e6, "µJ"), (1e3, "nJ")):
        if top >= div:
            return div, unit
    return 1.0, "pJ"


def num(v) -> float:
    """A value as a float; None, booleans and text as NaN."""
    if isinstance(v, bool) or v is None:
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan

