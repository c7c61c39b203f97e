"""Errors that mean "the user gave bad input": command-line tools print them as one line and exit 2."""

from __future__ import annotations


class UserError(Exception):
    """Bad input (unknown model, malformed table, unwritable path ...). The message is one line, names the culprit."""

    exit_code = 2


class TableError(UserError):
    """An energy table that is missing, malformed, or has a missing/unknown/negative/NaN/mistyped entry."""
