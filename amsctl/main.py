"""Entry point of ``amsctl``. Each command group lives in its own module."""

from __future__ import annotations

import typer

from amsctl import db, dlq, keys, outbox, saga, topology, users

app = typer.Typer(
    name="amsctl",
    help="Operate ai-micro-service: databases, topology, outbox, dead letters, sagas, users.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(db.app, name="db")
app.add_typer(topology.app, name="topology")
app.add_typer(outbox.app, name="outbox")
app.add_typer(users.app, name="users")
app.add_typer(keys.app, name="keys")
app.add_typer(dlq.app, name="dlq")
app.add_typer(saga.app, name="saga")
