"""Errors that infoflow reports to the user without a traceback."""

from __future__ import annotations

from collections.abc import Iterable


class UserError(Exception):
    """Bad input from the user: the CLI prints the message and exits with status 2.

    Raised while a command checks its input, before it writes to any store, so a rejected
    command leaves no trace.
    """

    exit_code = 2


def choices_text(choices: Iterable[object]) -> str:
    """Render valid choices as ``a, b, c`` for error messages."""
    items = [str(c) for c in choices]
    return ", ".join(items) if items else "(none)"
