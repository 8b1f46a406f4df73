"""What every `kfs` command shares and nothing heavy: the terminal's consoles, the usage error, day arguments,
one-line messages and the checks that fail a command."""

from __future__ import annotations

import sys
from datetime import date

from rich.console import Console

# Piped output (make demo | tee, CI logs) gets a wide fixed width instead of 80 columns.
CONSOLE_WIDTH = None if sys.stdout.isatty() else 140
console = Console(stderr=False, soft_wrap=True, width=CONSOLE_WIDTH)
err_console = Console(stderr=True, soft_wrap=True)


class UsageError(ValueError):
    """Bad input from the user: printed as one line, exit status 2."""


def parse_day(text: str, flag: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{flag} expects a date as YYYY-MM-DD, got {text!r}") from None


def one_line(text: str) -> str:
    """The first non-empty line of an error message (every failure is one line on the terminal)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else "(no message)"


def failed_checks(results: list) -> tuple[list, list]:
    """(errors, warnings): failed checks of Dagster run results, by severity. Errors fail a command; warnings
    are printed."""
    failed = [c for r in results for c in r.get_asset_check_evaluations() if not c.passed]
    errors = [c for c in failed if c.severity.value != "WARN"]
    return errors, [c for c in failed if c.severity.value == "WARN"]


def warn(message: str) -> None:
    err_console.print(f"kfs: warning: {message}", highlight=False, markup=False)
