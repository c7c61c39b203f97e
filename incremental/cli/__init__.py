"""Command line: ``incremental run | demo | report`` (a thin layer over :mod:`incremental.run`).

::

    incremental run CONFIG.toml [--FIELD VALUE ...] [--set FIELD=VALUE ...] [--force]
    incremental demo [--out out/demo] [--data-root DIR] [--quick] [--force]
    incremental report RUN_DIR [-o report.html]

Every configuration field is a flag (``--base-epochs 3``, ``--data-root DIR``, ``--share 2``); ``--set
base.epochs=3`` does the same with the field's dotted name. Flags override the file. Bad input prints one
line on stderr and exits with status 2. :mod:`.demo` is the demo (``make demo``).

The top floor: may import every package of ``incremental`` and ``energymodel``; nothing imports it.
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
from incremental import __version__
from incremental.report.html import write_html_report

__all__ = ["main", "build_parser", "write_html_report", "setup_logging"]

logger = logging.getLogger("incremental")


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad arguments as one line + exit 2."""

    def error(self, message: str) -> None:  # pragma: no cover - exercised through main()
        self.exit(2, f"{self.prog}: error: {message}\n")


class _TqdmHandler(logging.StreamHandler):
    """Writes log lines through ``tqdm.write`` so that they never overwrite a progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def progress_wanted() -> bool:
    """Progress bars only on a terminal: redirected logs get no bars and no carriage returns."""
    return sys.stderr.isatty()


def setup_logging(quiet: bool = False) -> None:
    """Phase lines of the ``incremental`` logger on stderr (``incremental: ...``); warnings only when quiet.

    Lines go through ``tqdm.write`` (bars and lines do not overwrite each other). Under ``torchrun`` ranks
    other than 0 log errors only.
    """
    handler = _TqdmHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("incremental: %(message)s"))
    logger.handlers[:] = [handler]
    rank = os.environ.get("RANK", "0").strip() or "0"
    if rank != "0":  # under torchrun only rank 0 talks
        logger.setLevel(logging.ERROR)
    else:
        logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False


# ---------------------------------------------------------------------------- commands
def _cmd_run(args: argparse.Namespace) -> int:
    from incremental.run.config import load_config
    from incremental.run.runner import format_summary, load_results, run

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
    if args.k is not None and args.fraction is not None:
        raise UserError("give either --k or --fraction, not both")
    if args.k is not None:
        if args.k < 0:
            raise UserError(f"--k {args.k}: a sharing point index is >= 0")
        overrides["share"] = args.k
    if args.fraction is not None:
        if not 0.0 <= args.fraction <= 1.0:
            raise UserError(f"--fraction {args.fraction}: a fraction lies in [0, 1]")
        overrides["share"] = float(args.fraction)
    if args.quiet and "progress" not in overrides:
        overrides["progress"] = "false"
    cfg = load_config(args.config, overrides)
    if args.print_config:
        sys.stdout.write(cfg.to_toml())
        return 0
    if cfg.progress and not progress_wanted():  # no bars in a redirected log (progress is not a result field)
        cfg = cfg.replace(progress=False)
    setup_logging(args.quiet)
    out = run(cfg, force=args.force)
    results = load_results(out)
    if _is_main():
        sys.stdout.write(format_summary(results))
        report = write_html_report(results, out / "report.html")
        print(f"results: {out / 'results.json'}")
        print(f"report:  {report}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from incremental.cli.demo import demo

    setup_logging(args.quiet)
    demo(out=args.out, data_root=args.data_root, quick=args.quick, force=args.force, device=args.device,
         progress=not args.quiet and progress_wanted())
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from incremental.run.runner import load_results

    setup_logging(quiet=False)
    results = load_results(args.run_dir)
    out = Path(args.output) if args.output else Path(args.run_dir) / "report.html"
    write_html_report(results, out)
    print(f"report: {out}")
    return 0


def _is_main() -> bool:
    from incremental.train import distributed

    return distributed.is_main()


_FIELD_DESTS: dict[str, str] = {}


def build_parser() -> argparse.ArgumentParser:
    from incremental.run.config import FIELDS, flag_name
    from incremental.run.config_sections import RENAMED_SECTIONS

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
    p.add_argument("--force", action="store_true",
                   help="replace a previous run in the run directory (the old one stays until the new one finishes)")
    p.add_argument("--k", type=int, default=None, metavar="N",
                   help="sharing point by index (blocks shared); sets the field 'share'")
    p.add_argument("--fraction", type=float, default=None, metavar="F",
                   help="sharing point by fraction of the conv/linear layers shared, snapped to the nearest point "
                        "(a note says where); sets the field 'share'")
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
        for old, now in RENAMED_SECTIONS.items():  # former flags, e.g. --calibration-epochs: read with a warning
            if f.path.startswith(now + "."):
                path = old + f.path[len(now):]
                _FIELD_DESTS["field__" + path.replace(".", "__")] = path
                group.add_argument(flag_name(path), dest="field__" + path.replace(".", "__"), default=None,
                                   help=argparse.SUPPRESS)
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
    r.add_argument("-o", "--out", "--output", dest="output", help="HTML file to write (default RUN_DIR/report.html)")
    r.set_defaults(func=_cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from incremental.train import distributed

    saved = (list(logger.handlers), logger.level, logger.propagate)  # main() may run inside another program
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = lambda msg, *a, **k: print(f"incremental: warning: {msg}", file=sys.stderr)
            return int(args.func(args) or 0)
    except UserError as exc:
        print(f"incremental: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except MemoryError:
        print("incremental: error: out of memory: the data and model do not fit in this process's memory (fewer "
              "images per class, a smaller batch or a machine with more memory)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("incremental: interrupted (an unfinished run resumes when the same command is run again)",
              file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as exc:  # a file-system refusal no check foresaw: still one line naming the file
        where = f" {exc.filename}" if exc.filename else ""
        print(f"incremental: error: cannot access{where}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    finally:
        distributed.destroy()
        logger.handlers[:] = saved[0]
        logger.setLevel(saved[1])
        logger.propagate = saved[2]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
