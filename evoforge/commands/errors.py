"""One clear line instead of a traceback, for every `evoforge` command, when the user's input is at fault.

The top-level command group catches what bad input raises (a bad setting, task, run id or file) and prints
`error: <message>`, exit status 2; `evoforge -v` also logs the traceback. Anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import logging
from typing import Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from evoforge.config import format_validation_errors

log = logging.getLogger(__name__)
errors = Console(stderr=True, soft_wrap=True)

USER_ERRORS: tuple[type[Exception], ...] = (ValueError, LookupError, OSError)
"""What bad input raises: evoforge's own errors for it (ConfigError, TaskError, ReplayError, ... are ValueErrors;
RunNotFound is a LookupError), pydantic's ValidationError and a UnicodeDecodeError (both ValueErrors), and a
file that cannot be read or written (OSError)."""


def describe(exc: Exception) -> str:
    """The one line a user reads for `exc`."""
    if isinstance(exc, ValidationError):
        return f"{exc.title}: {format_validation_errors(exc)}"
    if isinstance(exc, UnicodeDecodeError):
        return f"a file is not {exc.encoding} text ({exc.reason} at byte {exc.start})"
    message = str(exc) or "(no message)"
    # builtin types other than OSError (whose message says what happened) carry meaning in their name
    if type(exc).__module__ == "builtins" and not isinstance(exc, OSError):
        return f"{type(exc).__name__}: {message}"
    return message


class UserErrorsAsOneLine(TyperGroup):
    """The `evoforge` command group: a user error from any command (or sub-group) becomes one line."""

    def invoke(self, ctx: Any) -> Any:  # typer's (vendored) click Context; typer does not export its type
        try:
            return super().invoke(ctx)
        except USER_ERRORS as exc:
            log.info("%s failed", ctx.command_path, exc_info=exc)
            errors.print(f"[bold red]error:[/] {escape(describe(exc))}")
            raise typer.Exit(2) from exc
