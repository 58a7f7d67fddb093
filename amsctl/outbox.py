"""``amsctl outbox``: backlog and health of the three outboxes; re-queue parked events."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import TYPE_CHECKING

import typer

from amsctl.common import EXIT_FAILURE, EXIT_UNAVAILABLE, console, fail, print_json, settings
from shared.config import DATABASES, Settings
from shared.errors import DependencyUnavailable, ValidationFailed

if TYPE_CHECKING:  # imported where used: `amsctl outbox --help` loads no asyncpg or SQLAlchemy
    import asyncpg

    from amsctl.audit import Trail
    from outbox import store

app = typer.Typer(help="Outbox backlog, parked events, re-queueing.", no_args_is_help=True)


async def statuses(cfg: Settings, databases: tuple[str, ...]) -> list[dict[str, object]]:
    """Backlog, retrying, parked and oldest unsent age of each database's outbox (the
    ``status`` command and the console's outbox page)."""
    import asyncpg

    from outbox import store
    from shared.db import asyncpg_dsn

    out: list[dict[str, object]] = []
    for db in databases:
        conn = await asyncpg.connect(asyncpg_dsn(cfg.database.url(db)), timeout=10)
        try:
            out.append({"database": db, **asdict(await store.status(conn))})
        finally:
            await conn.close()
    return out


async def parked_events(cfg: Settings, database: str, limit: int = 100) -> list[store.ParkedEvent]:
    """The parked events of one database's outbox, oldest first."""
    import asyncpg

    from outbox import store
    from shared.db import asyncpg_dsn

    conn = await asyncpg.connect(asyncpg_dsn(cfg.database.url(database)), timeout=10)
    try:
        return await store.parked(conn, limit)
    finally:
        await conn.close()


async def requeue_audited(cfg: Settings, audit: Trail, database: str,
                          event_ids: list[str] | None) -> int:
    """Re-queue parked events (all when ``event_ids`` is None), recorded in the audit trail
    (the ``requeue`` command and the console)."""
    import asyncpg

    from amsctl.audit import run_audited
    from apps.auth.audit import AuditAction, AuditOutcome
    from outbox import store
    from shared.db import asyncpg_dsn

    if database not in DATABASES:
        raise ValidationFailed(
            f"unknown database {database!r}; expected one of {', '.join(DATABASES)}"
        )
    target = f"{database}:" + ("all-parked" if event_ids is None else ",".join(event_ids))

    async def requeue_in(conn: asyncpg.Connection) -> int:
        return await store.requeue_parked(conn, event_ids)

    conn = await asyncpg.connect(asyncpg_dsn(cfg.database.url(database)), timeout=10)
    try:
        return await run_audited(
            audit, AuditAction.OUTBOX_REQUEUE, target, lambda: requeue_in(conn),
            outcome_of=lambda n: (target, AuditOutcome.OK, {"requeued": n}),
        )
    finally:
        await conn.close()


@app.command("status")
def status(
    json_output: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """Backlog, events retrying, parked events and the age of the oldest unsent event."""
    import asyncpg
    from rich.table import Table

    try:
        rows = asyncio.run(statuses(settings(), DATABASES))
    except (OSError, asyncpg.PostgresError) as exc:
        fail(f"PostgreSQL is unreachable: {exc}", EXIT_UNAVAILABLE)
    blocked = broker_alarms(settings())
    if json_output:
        print_json([{**r, "publishing_blocked_by": blocked} for r in rows])
        return
    table = Table(title="Outbox")
    for column in ("database", "backlog", "retrying", "parked", "oldest unsent"):
        table.add_column(column, justify="left" if column == "database" else "right")
    for r in rows:
        age = r["oldest_age_s"]
        table.add_row(str(r["database"]), str(r["backlog"]), str(r["retrying"]), str(r["parked"]),
                      "-" if age is None else f"{float(age):.1f} s")  # type: ignore[arg-type]
    console.print(table)
    if blocked:
        console.print("[bold red]RabbitMQ blocks publishers[/]: " + "; ".join(blocked)
                      + ". The relays wait; the backlog grows until the alarm clears.")


def broker_alarms(cfg: Settings) -> list[str]:
    """Why the broker refuses publishes right now (memory or disk alarms, nodes down), as
    the management API reports it; a line saying it could not be asked, rather than nothing."""
    from shared.rabbitmq_admin import ManagementClient

    try:
        with ManagementClient(cfg.broker.management_url, timeout=5) as mgmt:
            nodes = mgmt.nodes()
    except DependencyUnavailable as exc:
        return [f"management API unreachable ({exc})"]
    alarms = []
    for node in nodes:
        name = node.get("name", "?")
        if node.get("mem_alarm"):
            alarms.append(f"memory alarm on {name}")
        if node.get("disk_free_alarm"):
            alarms.append(f"disk alarm on {name}")
    return alarms


@app.command("requeue")
def requeue(
    database: str = typer.Option(..., "--database", "-d", help="authdb, apidb or admindb."),
    event_id: list[str] = typer.Option(None, "--event-id", help="Parked event(s) to retry."),  # noqa: B008
    all_parked: bool = typer.Option(False, "--all-parked", help="Retry every parked event."),
) -> None:
    """Give parked events a fresh attempt budget; the relay publishes them again."""
    import asyncpg

    from amsctl.audit import AuditNotRecorded, trail

    if database not in DATABASES:
        fail(f"unknown database {database!r}; expected one of {', '.join(DATABASES)}", 2)
    if not event_id and not all_parked:
        fail("name events with --event-id, or pass --all-parked", 2)

    cfg = settings()

    async def run() -> int:
        async with trail(cfg) as audit:
            return await requeue_audited(cfg, audit, database, None if all_parked else event_id)

    try:
        count = asyncio.run(run())
    except DependencyUnavailable as exc:
        fail(str(exc), EXIT_UNAVAILABLE)
    except AuditNotRecorded as exc:
        fail(str(exc), EXIT_FAILURE)
    except (OSError, asyncpg.PostgresError) as exc:
        fail(f"PostgreSQL is unreachable: {exc}", EXIT_UNAVAILABLE)
    console.print(f"{database}: re-queued {count} parked event(s)")
    if count == 0:
        raise typer.Exit(4)
