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
    return Settings.from_env()


def fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
