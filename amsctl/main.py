"""Entry point of ``amsctl``. Each command group lives in its own module.

The groups are imported only when used: ``amsctl --help``, ``amsctl --version`` and shell
completion of the group names load none of them (SQLAlchemy, Litestar, aio-pika …), so
they answer in a small fraction of a second (tests/integration/test_amsctl_process.py measures it).

Help is rendered as plain text: typer's rich renderer labels every flag ``<bool>``, as if
``--json`` took a value.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import typer
from typer.core import TyperGroup

GROUPS: dict[str, tuple[str, str]] = {
    "status": ("amsctl.status:app", "The system at a glance: processes, outboxes, queues, sagas."),
    "db": ("amsctl.db:app", "Databases: create missing ones and migrate them."),
    "topology": ("amsctl.topology:app", "RabbitMQ exchanges, queues, bindings and policies."),
    "outbox": ("amsctl.outbox:app", "Outbox backlog, parked events, re-queueing."),
    "users": ("amsctl.users:app", "User accounts (authdb)."),
    "keys": ("amsctl.keys:app", "Token signing keys (JWKS)."),
    "dlq": ("amsctl.dlq.cli:app", "Dead letters: list, inspect, replay, purge."),
    "saga": ("amsctl.saga:app", "User-deletion sagas (authdb)."),
}
"""Command group -> (``module:Typer``, one-line help shown by ``amsctl --help``)."""


_COMPLETION_OPTIONS = {"install_completion", "show_completion"}


def _plain(command: Any) -> None:
    """Plain-text help for a command and everything below it."""
    command.rich_markup_mode = None
    for sub in getattr(command, "commands", {}).values():
        _plain(sub)


class LazyGroup(TyperGroup):
    """Stands for a command group in ``amsctl --help`` until the group is used; then the
    group's module is imported and the group itself runs (:meth:`Amsctl.resolve_command`)."""

    def __init__(self, *, name: str, target: str, help: str) -> None:
        super().__init__(name=name, help=help, no_args_is_help=True, rich_markup_mode=None)
        self._target = target
        self._loaded: Any = None

    def loaded(self) -> Any:
        if self._loaded is None:
            module, attr = self._target.split(":")
            command = typer.main.get_group(getattr(importlib.import_module(module), attr))
            command.name = self.name
            # typer adds its completion installers to every app it builds a command from;
            # they belong to `amsctl` itself only.
            command.params = [p for p in command.params if p.name not in _COMPLETION_OPTIONS]
            _plain(command)
            self._loaded = command
        return self._loaded

    def list_commands(self, ctx: Any) -> list[str]:
        loaded = self.loaded()
        return list(loaded.list_commands(ctx)) if hasattr(loaded, "list_commands") else []

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        loaded = self.loaded()
        return loaded.get_command(ctx, cmd_name) if hasattr(loaded, "get_command") else None


class Amsctl(TyperGroup):
    """The top-level group: the lazily imported groups next to typer's own commands."""

    def __init__(self, **attrs: Any) -> None:
        attrs["rich_markup_mode"] = None
        super().__init__(**attrs)
        for name, (target, text) in GROUPS.items():
            self.commands.setdefault(name, LazyGroup(name=name, target=target, help=text))

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        name, command, rest = super().resolve_command(ctx, args)
        if isinstance(command, LazyGroup):
            command = command.loaded()
        return name, command, rest

    def invoke(self, ctx: Any) -> Any:
        """Run the command; an error no command mapped becomes one line and an exit code.

        Commands map the errors they expect; this is the net under them, so an operator
        never reads a traceback (``AMSCTL_DEBUG=1`` shows it).
        """
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException, KeyboardInterrupt, EOFError):
            raise
        except Exception as exc:
            if os.environ.get("AMSCTL_DEBUG"):
                raise
            from amsctl.common import fail
            from amsctl.errors import describe

            code, message = describe(exc)
            fail(message, code)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            number = version("ai-micro-service")
        except PackageNotFoundError:  # run from a checkout that is not installed
            number = "unknown (not installed)"
        typer.echo(f"amsctl {number}")
        raise typer.Exit(0)


app = typer.Typer(
    name="amsctl",
    cls=Amsctl,
    help="Operate ai-micro-service: databases, topology, outbox, dead letters, sagas, users.\n\n"
    "Exit codes: 0 done, 1 failed, 2 usage or a bad setting, 3 a dependency (PostgreSQL, "
    "RabbitMQ, its management API) unreachable, 4 nothing matched.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Operate ai-micro-service: databases, topology, outbox, dead letters, sagas, users."""
