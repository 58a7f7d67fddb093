"""Helpers every command group uses: settings, console output, exit codes."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import typer
from rich.console import Console

from shared.config import Settings

# Exit codes scripts may rely on.
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
"""A dependency (database, broker) is unreachable."""
EXIT_NOT_FOUND = 4

console = Console()
err_console = Console(stderr=True)


def settings() -> Settings:
    """The settings from the environment; a malformed variable is a usage error (exit 2)."""
    try:
        return Settings.from_env()
    except ValueError as exc:
        fail(f"{exc} (see the configuration table in README.md)", EXIT_USAGE)


def confirm(question: str, yes: bool) -> None:
    """Go on only if ``--yes`` was given or the operator says yes at a terminal.

    Without a terminal (a script, CI) and without ``--yes`` nothing is done: exit 2.
    """
    if yes:
        return
    if not sys.stdin.isatty():
        fail(f"{question} Not at a terminal: re-run with --yes to confirm.", EXIT_USAGE)
    if not typer.confirm(question, default=False):
        fail("cancelled; nothing was changed", EXIT_USAGE)


def fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
