"""``energymodel report``: build one self-contained HTML report from a recipe (TOML)."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser", "default_output"]


def add_parser(subparsers) -> None:
    """Register ``report`` on the ``energymodel`` sub-command parser."""
    from energymodel.cli.common import HelpFormatter

    p = subparsers.add_parser(
        "report", formatter_class=HelpFormatter, help="write a self-contained HTML report from a recipe (TOML)",
        description="Build an HTML report (setup, per-layer costs, sharing-fraction comparison, energy sweeps, "
        "optional engine results and measured timings, formulas) from a recipe file; see energymodel.report.recipe.",
    )
    p.add_argument("recipe", help="recipe file (.toml), e.g. reports/paper-resnet18-cifar100.toml")
    p.add_argument("-o", "--out", help="HTML file to write (default: out/<recipe name>.html beside the recipe)")
    p.add_argument("--output", dest="out", help=argparse.SUPPRESS)  # deprecated alias
    p.add_argument("--engine", metavar="RUN_DIR", help="add the engine results of an incremental run (RUN_DIR/results.json)")
    p.add_argument("--measured", metavar="FILE", help="add a measured-vs-modelled JSON file (from the benchmarks)")
    p.set_defaults(func=run)


def default_output(recipe_path: str | Path) -> Path:
    """``reports/x.toml`` -> ``reports/out/x.html``."""
    p = Path(recipe_path)
    return p.parent / "out" / f"{p.stem}.html"


def run(args: argparse.Namespace) -> None:
    from energymodel.progress import write
    from energymodel.report import build_report, load_engine, load_measured, write_report
    from energymodel.report.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    engine = load_engine(args.engine) if args.engine else None
    measured = load_measured(args.measured) if args.measured else None
    data = build_report(recipe, engine=engine, measured=measured)
    out = Path(args.out) if args.out else default_output(args.recipe)
    write_report(data, out)
    write(f"wrote {out}")
