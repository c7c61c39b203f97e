"""Errors that mean "the user gave bad input": command-line tools print them as one line and exit 2."""

from __future__ import annotations

__all__ = ["UserError", "TableError", "EnergyModelWarning", "one_line"]


class UserError(Exception):
    """Bad input (unknown model, malformed table, unwritable path ...). The message is one line, names the culprit."""

    exit_code = 2


class TableError(UserError):
    """An energy table that is missing, malformed, or has a missing/unknown/negative/NaN/mistyped entry."""


class EnergyModelWarning(UserWarning):
    """A warning of energymodel's own (an unmodelled call, a datatype the table does not price ...): the command
    line prints it as ``energymodel: warning: ...``; other libraries' warnings keep their own form."""


def one_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (its class name when it has none)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__
