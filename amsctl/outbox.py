"""``amsctl outbox``: backlog and health of the three outboxes."""

from __future__ import annotations

import typer

app = typer.Typer(help="Outbox backlog, parked events, re-queueing.", no_args_is_help=True)
