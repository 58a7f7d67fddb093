"""``amsctl saga``: the user-deletion sagas in authdb (``show``, ``list --status``).

``show`` prints every step with its outcome and timestamps; for a saga that ended in
``compensation_failed`` it also counts the dead letters waiting in the queue the reason
names, so the operator sees both halves of the failure in one place.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from amsctl.common import (
    EXIT_FAILURE,
    EXIT_NOT_FOUND,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    console,
    fail,
    print_json,
    settings,
)
from shared.statuses import SagaStatus

if TYPE_CHECKING:  # the command bodies import these: `amsctl saga --help` loads no SQLAlchemy
    from apps.auth.schemas import Saga
    from shared.config import Settings

T = TypeVar("T")

app = typer.Typer(help="User-deletion sagas (authdb).", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _as_dict(saga: Saga) -> dict[str, Any]:
    import msgspec

    data: dict[str, Any] = msgspec.structs.asdict(saga)
    data["steps"] = [msgspec.structs.asdict(step) for step in saga.steps]
    return data


async def _load(cfg: Settings, saga_id: uuid.UUID) -> Saga | None:
    from apps.auth import sagas
    from shared.db import create_engine, session_factory

    engine = create_engine(cfg.database.auth_url, pool_size=1)
    try:
        async with session_factory(engine)() as session:
            return await sagas.load(session, saga_id)
    finally:
        await engine.dispose()


async def _list(cfg: Settings, status: str | None, limit: int) -> list[Saga]:
    from apps.auth import sagas
    from shared.db import create_engine, session_factory

    engine = create_engine(cfg.database.auth_url, pool_size=1)
    try:
        async with session_factory(engine)() as session:
            return await sagas.list_sagas(session, status=status, limit=limit)
    finally:
        await engine.dispose()


def dead_letters(cfg: Settings, queue: str) -> int | None:
    """Messages waiting in ``queue`` (a passive declare: exact, unlike the management
    API's sampled statistics); None when the broker cannot be asked."""
    try:
        return asyncio.run(_queue_depth(cfg.broker.url, queue))
    except Exception:  # the count is a hint; the saga is shown regardless
        return None


async def _queue_depth(url: str, queue: str) -> int:
    from shared.broker import connect_plain

    connection, _ = await connect_plain(url, name="amsctl saga", connect_timeout_s=5)
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)
    finally:
        await connection.close()


def _run(coro: Coroutine[Any, Any, T]) -> T:
    import sqlalchemy.exc

    try:
        return asyncio.run(coro)
    except (OSError, sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError) as exc:
        fail(f"authdb is unreachable: {exc}", EXIT_UNAVAILABLE)
    except sqlalchemy.exc.ProgrammingError as exc:
        fail(f"authdb is not migrated (run `amsctl db migrate`): {exc.orig}", EXIT_FAILURE)


@app.command("show")
def show(
    saga_id: Annotated[str, typer.Argument(help="The saga id (from DELETE /auth/users/{id}).")],
    as_json: JsonOpt = False,
) -> None:
    """One saga: status, reason, every step with outcome and timestamps, dead letters."""
    from rich.table import Table

    from shared.topology import consumer_spec

    try:
        sid = uuid.UUID(saga_id)
    except ValueError:
        fail(f"not a saga id: {saga_id!r}", EXIT_USAGE)
    cfg = settings()
    view: Saga | None = _run(_load(cfg, sid))
    if view is None:
        fail(f"no saga {saga_id}", EXIT_NOT_FOUND)
    dlq = consumer_spec("profiles").dlq_name
    waiting = dead_letters(cfg, dlq) if view.status == SagaStatus.COMPENSATION_FAILED else None
    if as_json:
        data = _as_dict(view)
        if view.status == SagaStatus.COMPENSATION_FAILED:
            data["dead_letter_queue"] = dlq
            data["dead_letters"] = waiting
        print_json(data)
        return
    console.print(f"saga {view.saga_id}  user {view.user_id}")
    console.print(f"status: [bold]{view.status}[/]")
    if view.reason:
        console.print(f"reason: {view.reason}")
    console.print(f"created {view.created_at:%Y-%m-%d %H:%M:%S}  "
                  f"finished {_ts(view.finished_at)}  current step {view.current_step or '-'}")
    table = Table("step", "kind", "status", "started", "finished", "deadline", "late", "detail")
    for step in view.steps:
        table.add_row(step.name, step.kind, step.status, _ts(step.started_at),
                      _ts(step.finished_at), _ts(step.deadline), str(step.late_replies),
                      step.detail or "")
    console.print(table)
    if view.status == SagaStatus.COMPENSATION_FAILED:
        count = "unknown" if waiting is None else str(waiting)
        console.print(
            f"[bold red]dead letters in {dlq}: {count}[/] "
            f"(inspect: amsctl dlq list --queue {dlq}; replay after fixing the cause)"
        )


@app.command("list")
def list_cmd(
    status: Annotated[
        str | None, typer.Option("--status", help=f"One of: {', '.join(SagaStatus)}.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 100,
    as_json: JsonOpt = False,
) -> None:
    """Sagas, newest first, optionally of one status."""
    from rich.table import Table

    if status is not None and status not in set(SagaStatus):
        fail(f"unknown status {status!r}; expected one of {', '.join(SagaStatus)}", EXIT_USAGE)
    views: list[Saga] = _run(_list(settings(), status, limit))
    if as_json:
        print_json([_as_dict(v) for v in views])
        return
    table = Table("saga", "user", "status", "current step", "created", "reason")
    for v in views:
        table.add_row(str(v.saga_id), str(v.user_id), v.status, v.current_step or "-",
                      _ts(v.created_at), v.reason or "")
    console.print(table)


def _ts(value: object) -> str:
    return "-" if value is None else f"{value:%Y-%m-%d %H:%M:%S}"
