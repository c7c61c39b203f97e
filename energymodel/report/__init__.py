"""Self-contained HTML reports: setup, per-layer costs, the sharing-fraction comparison, energy sweeps,
engine results and measured-vs-modelled timings, with the cost model's formulas as an appendix.

Three steps, each usable alone::

    data = build_report(load_recipe("reports/paper-resnet18-cifar100.toml"))   # -> ReportData
    html = render_report(data)                                                 # -> str
    write_report(data, "reports/out/paper.html")                               # atomic

The HTML is one file: CSS inline, plots inline SVG (matplotlib), no scripts, nothing fetched. All text
goes through jinja2 with autoescaping. Every section except the title is optional: a :class:`ReportData`
with only ``engine`` set (from :func:`engine_section_from_results`) renders just that section.

Modules: :mod:`.recipe` (what a report shows), :mod:`.build` (computing its sections), :mod:`.inputs` (the
checked engine and measured sections), :mod:`.views` and :mod:`.engine` (sections as template data),
:mod:`.fmt` (one formatter per quantity), :mod:`.plots`, :mod:`.run_plots` and :mod:`.plotkit` (inline SVG),
:mod:`.appendix` (the formulas, from the code's docstrings), ``templates/report.html``. May import
:mod:`energymodel.referee`, :mod:`energymodel.analysis` and every floor below.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from energymodel.errors import UserError
from energymodel.report import engine as engine_views
from energymodel.report import views
from energymodel.report.appendix import formulas
from energymodel.report.build import build_report, versions
from energymodel.report.inputs import (
    ENGINE_STRATEGY_COLUMNS,
    SECTION_IDS,
    ReportData,
    engine_section_from_results,
    load_engine,
    load_measured,
    measured_section,
)

__all__ = [
    "ReportData", "build_report", "render_report", "write_report", "engine_section_from_results",
    "measured_section", "load_measured", "load_engine", "versions", "formulas", "ENGINE_STRATEGY_COLUMNS", "SECTION_IDS",
]


def _template():
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    text = (resources.files("energymodel.report") / "templates" / "report.html").read_text(encoding="utf-8")
    return env.from_string(text)


def render_report(data: ReportData) -> str:
    """The report as one self-contained HTML document (a string)."""
    from energymodel.price.table import SWEEP_KEYS, load_table

    setup = views.setup_view(data.setup or {})
    base_values: dict[str, float] = {}
    tab_dict = (data.setup or {}).get("table")
    if data.sweeps:
        try:
            tab = load_table(tab_dict.get("path") or tab_dict["name"]) if isinstance(tab_dict, dict) else None
        except UserError:
            tab = None
        if tab is not None:
            for full in SWEEP_KEYS:
                short = full.rpartition(".")[2]
                base_values[short] = float(tab.word_bits) if full == "word_bits" else tab.get(full)
    word_bits = int((tab_dict or {}).get("word_bits") or 32) if isinstance(tab_dict, dict) else 32
    sections = []
    if setup["groups"] or setup["table"]:
        sections.append(("setup", "Setup"))
    layers = views.layers_view(data.layers, word_bits) if data.layers is not None and len(data.layers) else None
    residency = views.residency_view(data.residency)
    if layers:
        sections.append(("layers", "Per-layer costs"))
    compare = views.compare_view(data.compare, word_bits) if data.compare is not None and len(data.compare) else None
    if compare:
        sections.append(("sharing", "Sharing-fraction comparison"))
    sweeps = [views.sweep_view(sw, base_values) for sw in data.sweeps]
    if sweeps:
        sections.append(("sweep", "Energy sweeps"))
    engine = engine_views.engine_view(data.engine) if data.engine else None
    if engine:
        sections.append(("engine", "Engine results"))
    measured = views.measured_view(data.measured) if data.measured else None
    if measured:
        sections.append(("measured", "Measured vs modelled"))
    sections.append(("appendix", "Appendix: the cost model"))
    headline = engine_views.headline(data.engine, data.compare)
    return _template().render(
        title=data.title, description=data.description, headline=headline, sections=sections, setup=setup,
        layers=layers, residency=residency, compare=compare, sweeps=sweeps, engine=engine, measured=measured,
        appendix=formulas(),
    )


def write_report(data: ReportData, path: str | Path) -> Path:
    """Render ``data`` and write it to ``path`` atomically (a failed render never replaces a good file)."""
    from energymodel.atomic import write_text

    html = render_report(data)  # fully rendered before anything touches the target
    return write_text(path, html)
