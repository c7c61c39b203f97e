"""Command line: ``energymodel profile | compare | points | tables | sweep | report`` (a thin layer over the API).

One module per command (``profile``, ``compare``, ``points``, ``tables``, ``sweep``, ``report``), each with
``add_parser(subparsers)`` and ``run(args)``; :mod:`energymodel.cli.common` holds what they share (output
envelope, shared arguments), :mod:`energymodel.cli.console` the console tables. Bad input prints one line on
stderr and exits with status 2; outputs are written atomically. Every ``--format json`` output is one envelope:
``{"tool", "version", "command", "model", "data"}``. Importing this package loads neither torch nor pandas, so
``--help`` is fast.

May import every other package of ``energymodel`` (lazily, inside ``run``); nothing imports it but ``__main__``.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

from energymodel import __version__
from energymodel.cli import compare, points, profile, report, sweep, tables
from energymodel.cli.common import HelpFormatter, _Parser
from energymodel.errors import UserError

__all__ = ["main", "build_parser"]

#: the commands, in the order shown by --help
COMMANDS = (profile, compare, points, tables, sweep, report)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="energymodel", description=__doc__.splitlines()[0], formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"energymodel {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Our warnings as ``energymodel: warning: ...``; another library's as Python prints it (its file, line and
    category: the warning is theirs, not ours)."""
    from energymodel import progress
    from energymodel.errors import EnergyModelWarning

    if issubclass(category, EnergyModelWarning):
        progress.write(f"energymodel: warning: {message}")
    else:
        progress.write(warnings.formatwarning(message, category, filename, lineno, line).rstrip())


def main(argv: Sequence[str] | None = None) -> int:
    from energymodel import progress

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = _show_warning
            if args.command in ("compare", "sweep", "report"):
                with progress.progress(f"{args.command} {getattr(args, 'model', None) or args.recipe}"):
                    args.func(args)
            else:
                args.func(args)
    except UserError as exc:
        print(f"energymodel: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return exc.exit_code
    except MemoryError:
        print("energymodel: error: out of memory (a smaller input, batch or sweep grid needs less)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("energymodel: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as exc:  # a file-system refusal no command foresaw: still one line naming the file
        where = f" {exc.filename}" if exc.filename else ""
        print(f"energymodel: error: cannot access{where}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0
