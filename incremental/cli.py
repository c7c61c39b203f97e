"""Command line: ``incremental run | demo | report`` (a thin layer over :mod:`incremental.run`).

::

    incremental run CONFIG.toml [--FIELD VALUE ...] [--set FIELD=VALUE ...] [--force]
    incremental demo [--out out/demo] [--data-root DIR] [--quick] [--force]
    incremental report RUN_DIR [-o report.html]

Every configuration field is a flag (``--base-epochs 3``, ``--data-root DIR``, ``--share 2``); ``--set
base.epochs=3`` does the same with the field's dotted name. Flags override the file. Bad input prints one
line on stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from energymodel.errors import UserError

from . import __version__

__all__ = ["main", "build_parser", "write_html_report", "setup_logging"]

logger = logging.getLogger("incremental")


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad arguments as one line + exit 2."""

    def error(self, message: str) -> None:  # pragma: no cover - exercised through main()
        self.exit(2, f"{self.prog}: error: {message}\n")


def setup_logging(quiet: bool = False) -> None:
    """Phase lines of the ``incremental`` logger on stderr (``incremental: ...``); warnings only when quiet.

    Under ``torchrun`` ranks other than 0 log errors only.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("incremental: %(message)s"))
    logger.handlers[:] = [handler]
    rank = os.environ.get("RANK", "0").strip() or "0"
    if rank != "0":  # under torchrun only rank 0 talks
        logger.setLevel(logging.ERROR)
    else:
        logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False


# ---------------------------------------------------------------------------- report
def write_html_report(results: dict[str, Any], path: str | Path) -> Path:
    """Write the HTML report of a finished run's ``results`` (``results.json`` content) with :mod:`energymodel.report`.

    The report holds the run's setup, the analytical sharing comparison of the model at the chosen sharing
    point (:func:`energymodel.sharing.compare` for the run's task sizes, samples and epochs) and the engine
    section (``results["report"]``).
    """
    try:
        from energymodel.report import ReportData, engine_section_from_results, versions, write_report
    except ImportError as exc:
        raise UserError(f"cannot write the HTML report: energymodel.report is not available ({exc})") from None
    import datetime as dt

    engine = engine_section_from_results(results["report"])
    cfg = results["config"]
    tasks = results["dataset"]["tasks"]
    setup: dict[str, Any] = {
        "model": {"spec": results["model"]["name"], "input_shape": results["dataset"]["input_shape"],
                  "blocks": [p["after"] for p in results["model"]["sharing_points"][1:]],
                  "sharing_points": len(results["model"]["sharing_points"])},
        "training": {"base_epochs": cfg["base"]["epochs"], "branch_epochs": cfg["branch"]["epochs"],
                     "batch": cfg["branch"]["batch"], "optimizer": cfg["branch"]["optimizer"],
                     "lr": cfg["branch"]["lr"], "augment": cfg["augment"],
                     "train_images_per_task": [t["train"] for t in tasks],
                     "test_images_per_task": [t["test"] for t in tasks]},
        "dataset": f"{results['dataset']['name']} ({results['dataset']['source']})",
        "tasks": f"{cfg['tasks']}: " + "; ".join(f"task {t['task']} = {', '.join(t['class_names'])}" for t in tasks),
        "share": str(cfg["share"]),
        "seeds": ", ".join(map(str, results["seeds"])),
        "device": results["environment"]["device"],
        "run directory": results["run_dir"],
        "versions": versions(),
        "generated": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    compare_frame = None
    try:
        from energymodel.profile import as_table
        from energymodel.sharing import compare

        from .run import _model_factory

        table = as_table(results["energy_table"])
        setup["table"] = table.to_dict()
        first = results["per_seed"][0]
        factory = _model_factory(_config_from_results(results), None)
        model = factory(len(tasks[0]["classes"]))
        new = [t for t in tasks[1:]]
        compare_frame = compare(
            model, tuple(results["dataset"]["input_shape"]), share=None,
            new_classes=len(new[0]["classes"]), old_classes=len(tasks[0]["classes"]),
            samples_new=max(1, new[0]["train"]), samples_old=max(1, first["base"]["samples"]),
            epochs=cfg["branch"]["epochs"], batch=cfg["branch"]["batch"], optimizer=cfg["branch"]["optimizer"],
            table=table, cache_prefix=not cfg["augment"] and cfg["cache_features"] != "off", tasks=len(new),
        )
    except (UserError, ImportError, KeyError, ValueError) as exc:  # the comparison is extra: never fail on it
        logger.warning("report: analytical comparison left out (%s)", exc)
    seeds = results["seeds"]
    desc = (f"Clone-and-branch incremental learning (partial network sharing) on {results['dataset']['name']} with "
            f"{results['model']['name']}, tasks {cfg['tasks']}, "
            f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''}{' (means over seeds)' if len(seeds) > 1 else ''}. "
            f"Accuracies are on the test images; energies are modelled by energymodel ({results['energy_table']}) "
            "for the training each strategy really did; times are measured wall clock on "
            f"{results['environment']['device']}.")
    data = ReportData(title=f"Incremental learning run: {results.get('name') or Path(results['run_dir']).name}",
                      description=desc, setup=setup, compare=compare_frame, engine=engine)
    return write_report(data, path)


def _config_from_results(results: dict[str, Any]):
    from .config import RunConfig

    cfg = {k: v for k, v in results["config"].items() if v is not None}
    cfg = {k: ({kk: vv for kk, vv in v.items() if vv is not None} if isinstance(v, dict) else v) for k, v in cfg.items()}
    return RunConfig.from_dict(cfg, source=f"{results['run_dir']}/results.json")


# ---------------------------------------------------------------------------- commands
def _cmd_run(args: argparse.Namespace) -> int:
    from .config import load_config
    from .run import format_summary, load_results, run

    overrides: dict[str, Any] = {}
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {item!r}: expected FIELD=VALUE, e.g. --set base.epochs=3")
        overrides[key.strip()] = value
    for dest, path in _FIELD_DESTS.items():
        value = getattr(args, dest, None)
        if value is not None:
            overrides[path] = value
    if args.quiet and "progress" not in overrides:
        overrides["progress"] = "false"
    cfg = load_config(args.config, overrides)
    if args.print_config:
        sys.stdout.write(cfg.to_toml())
        return 0
    setup_logging(args.quiet)
    out = run(cfg, force=args.force)
    results = load_results(out)
    if _is_main():
        sys.stdout.write(format_summary(results))
        print(f"results: {out / 'results.json'}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import demo

    setup_logging(args.quiet)
    demo(out=args.out, data_root=args.data_root, quick=args.quick, force=args.force, device=args.device,
         progress=not args.quiet)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .run import load_results

    results = load_results(args.run_dir)
    out = Path(args.output) if args.output else Path(args.run_dir) / "report.html"
    write_html_report(results, out)
    print(f"report: {out}")
    return 0


def _is_main() -> bool:
    from . import distributed

    return distributed.is_main()


_FIELD_DESTS: dict[str, str] = {}


def build_parser() -> argparse.ArgumentParser:
    from .config import FIELDS

    parser = _Parser(prog="incremental", description="Incremental learning with partial network sharing "
                                                      "(clone-and-branch): train, compare baselines, cost with energymodel.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("run", help="run (or resume) an experiment from a TOML config",
                       description="Run an experiment into its run directory; an unfinished run directory is "
                                   "resumed, a finished one is reported (use --force to redo it). Every config "
                                   "field is also a flag below; flags override the file.")
    p.add_argument("config", nargs="?", help="run configuration (TOML); optional when the flags give "
                                             "dataset, model and tasks")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE",
                   help="set a field by its dotted name, e.g. --set base.epochs=3 (repeatable)")
    p.add_argument("--force", action="store_true", help="replace a previous run in the run directory")
    p.add_argument("--quiet", action="store_true", help="no phase log lines and no progress bars")
    p.add_argument("--print-config", action="store_true", help="print the resolved configuration (TOML) and exit")
    group = p.add_argument_group("configuration fields (override the file)")
    _FIELD_DESTS.clear()
    for f in FIELDS:
        dest = "field__" + f.path.replace(".", "__")
        _FIELD_DESTS[dest] = f.path
        default = "required" if f.required else f"default {f.default!r}"
        group.add_argument(f.flag, dest=dest, metavar="VALUE", default=None,
                           help=f"{f.help} [{f.expected}; {default}]".replace("%", "%%"))
    p.set_defaults(func=_cmd_run)

    d = sub.add_parser("demo", help="the Fashion-MNIST demo: grow smallcnn by classes 5-9, compare, report",
                       description="Fashion-MNIST, smallcnn, base on classes 0-4, sharing-point search, a branch "
                                   "for classes 5-9 and every baseline; writes results and an HTML report.")
    d.add_argument("--out", default="out/demo", help="run directory (default out/demo)")
    d.add_argument("--data-root", default=None,
                   help="folder with the Fashion-MNIST IDX files (default: /usr/share/datasets/fashion-mnist)")
    d.add_argument("--quick", action="store_true", help="a tiny setting that runs in seconds (for tests)")
    d.add_argument("--force", action="store_true", help="recompute even if the run directory is finished")
    d.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    d.add_argument("--quiet", action="store_true", help="no phase log lines and no progress bars")
    d.set_defaults(func=_cmd_demo)

    r = sub.add_parser("report", help="write the HTML report of a finished run",
                       description="Write the HTML report of a finished run directory (refuses unfinished runs).")
    r.add_argument("run_dir", help="run directory (holds results.json and DONE)")
    r.add_argument("-o", "--output", help="HTML file to write (default RUN_DIR/report.html)")
    r.set_defaults(func=_cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from . import distributed

    saved = (list(logger.handlers), logger.level, logger.propagate)  # main() may run inside another program
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = lambda msg, *a, **k: print(f"incremental: warning: {msg}", file=sys.stderr)
            return int(args.func(args) or 0)
    except UserError as exc:
        print(f"incremental: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("incremental: interrupted (an unfinished run resumes when the same command is run again)",
              file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    finally:
        distributed.destroy()
        logger.handlers[:] = saved[0]
        logger.setLevel(saved[1])
        logger.propagate = saved[2]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
