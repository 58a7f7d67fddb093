"""``amsctl topology``: declare the RabbitMQ topology, or export it as definitions.json."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

from amsctl.common import EXIT_UNAVAILABLE, console, fail, settings

app = typer.Typer(help="RabbitMQ exchanges, queues, bindings and policies.", no_args_is_help=True)


@app.command("apply")
def apply() -> None:
    """Declare every exchange, queue, binding and policy on the broker (idempotent)."""
    from aiormq.exceptions import AMQPError

    from shared.errors import DependencyUnavailable
    from shared.topology_apply import apply_topology

    cfg = settings()
    try:
        summary = asyncio.run(apply_topology(cfg))
    except DependencyUnavailable as exc:  # the management API (policies)
        fail(str(exc), EXIT_UNAVAILABLE)
    except (OSError, ConnectionError, AMQPError) as exc:
        fail(f"RabbitMQ at {_safe(cfg.broker.url)} is unreachable or refused the "
             f"connection (does the vhost exist?): {exc!r}", EXIT_UNAVAILABLE)
    console.print(summary)


@app.command("export")
def export(
    output: Path = typer.Option(  # noqa: B008
        Path("infra/rabbitmq/definitions.json"), "--output", "-o", help="File to write."
    ),
) -> None:
    """Write the topology as a management-plugin definitions file (imported at boot)."""
    from shared.broker import definitions_json

    output.write_text(definitions_json())
    console.print(f"wrote {output}")


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"
