"""``amsctl dlq``: list, show, replay and purge dead letters; audit history.

Exit codes: 0 done; 1 some messages could not be replayed/purged; 2 usage (bad filter,
not a dead-letter queue, purge without ``--yes``); 3 RabbitMQ unreachable; 4 nothing
matched a ``--message-id`` / ``show``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from amsctl.common import (
    EXIT_FAILURE,
    EXIT_NOT_FOUND,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    confirm,
    console,
    err_console,
    fail,
    print_json,
    settings,
)
from amsctl.dlq.audit import AuditLog
from amsctl.dlq.model import DeadLetter, Selection, group_by_fingerprint
from shared.config import Settings
from shared.durations import parse_duration
from shared.errors import Conflict, DependencyUnavailable, NotFound

if TYPE_CHECKING:  # the command bodies import these: `amsctl dlq --help` loads no aio-pika
    from amsctl.dlq import service
    from amsctl.dlq.broker import DeadLetterStore, Outcome

    StoreFactory = Callable[[Settings], AbstractAsyncContextManager[DeadLetterStore]]

app = typer.Typer(
    help="Dead letters: list, inspect, replay to the queue they failed in, purge.",
    no_args_is_help=True,
)

store_factory: StoreFactory | None = None
"""Composition root: tests may swap in a fake store; None means RabbitMQ
(:class:`amsctl.dlq.broker.AmqpDeadLetterStore`, imported only when a command runs)."""


def _store(s: Settings) -> AbstractAsyncContextManager[DeadLetterStore]:
    if store_factory is not None:
        return store_factory(s)
    from amsctl.dlq.broker import AmqpDeadLetterStore

    return AmqpDeadLetterStore(s)


# --- shared options -------------------------------------------------------------------
QueueOpt = Annotated[
    list[str] | None, typer.Option("--queue", "-q", help="Dead-letter queue (repeatable).")
]
IdOpt = Annotated[
    list[str] | None, typer.Option("--message-id", "-m", help="Message id (repeatable).")
]
KeyOpt = Annotated[
    str | None, typer.Option("--routing-key", "-k", help="Topic pattern, e.g. 'user.*'.")
]
ErrorOpt = Annotated[
    str | None, typer.Option("--error", "-e", help="Text in the error type/message/location.")
]
OlderOpt = Annotated[
    str | None, typer.Option("--older-than", help="Last failure older than, e.g. 1h, 2d.")
]
NewerOpt = Annotated[
    str | None, typer.Option("--newer-than", help="Last failure newer than, e.g. 15m.")
]
FpOpt = Annotated[
    str | None, typer.Option("--fingerprint", "-f", help="Fingerprint id from 'list --group'.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
ReasonOpt = Annotated[
    str | None, typer.Option("--reason", "-r", help="Why; recorded in the audit log.")
]
MaxOpt = Annotated[int | None, typer.Option("--max", min=1, help="Stop after this many messages.")]
GroupOpt = Annotated[bool, typer.Option("--group", "-g", help="Group by failure fingerprint.")]
AllOpt = Annotated[bool, typer.Option("--all", help="Every dead-letter queue.")]
DryOpt = Annotated[bool, typer.Option("--dry-run", help="Print the plan, change nothing.")]
YesOpt = Annotated[bool, typer.Option("--yes", help="Really remove (without it: show the plan).")]


def _selection(*, ids: list[str] | None, key: str | None, error: str | None, older: str | None,
               newer: str | None, fingerprint: str | None) -> Selection:
    try:
        return Selection(
            message_ids=frozenset(ids or ()), routing_key=key, error=error,
            older_than=parse_duration(older) if older else None,
            newer_than=parse_duration(newer) if newer else None, fingerprint=fingerprint,
        )
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)


def _run(main: Callable[[Settings], Coroutine[Any, Any, int]]) -> None:
    """Run one command; map errors to exit codes once, here."""
    from amsctl.audit import AuditNotRecorded
    from amsctl.dlq.service import UsageError

    for noisy in ("aio_pika", "aiormq"):  # their connect errors are reported by us, once
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    try:
        code = asyncio.run(main(settings()))
    except UsageError as exc:
        fail(str(exc), EXIT_USAGE)
    except DependencyUnavailable as exc:
        fail(str(exc), EXIT_UNAVAILABLE)
    except NotFound as exc:
        fail(str(exc), EXIT_NOT_FOUND)
    except Conflict as exc:
        fail(str(exc), EXIT_FAILURE)
    except AuditNotRecorded as exc:
        fail(str(exc), EXIT_FAILURE)
    except OSError as exc:
        fail(f"cannot write the audit log: {exc}", EXIT_FAILURE)
    raise typer.Exit(code)


# --- commands -------------------------------------------------------------------------


@app.command("queues")
def queues_cmd(as_json: JsonOpt = False) -> None:
    """Every dead-letter queue with its depth and the work queue it replays into."""
    from amsctl.dlq import render

    async def main(s: Settings) -> int:
        async with _store(s) as store:
            found = store.dead_letter_queues()
        if as_json:
            print_json([q.__dict__ for q in found])
        else:
            console.print(render.queues_table(found))
        return 0

    _run(main)


@app.command("list")
def list_cmd(
    *, queue: QueueOpt = None, routing_key: KeyOpt = None, error: ErrorOpt = None,
    older_than: OlderOpt = None, newer_than: NewerOpt = None, fingerprint: FpOpt = None,
    message_id: IdOpt = None,
    group: GroupOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Dead letters across the dead-letter queues (read without removing or reordering)."""
    from amsctl.dlq import render
    from amsctl.dlq.service import read, resolve_queues

    selection = _selection(ids=message_id, key=routing_key, error=error, older=older_than,
                           newer=newer_than, fingerprint=fingerprint)

    async def main(s: Settings) -> int:
        async with _store(s) as store:
            letters = await read(
                store, resolve_queues(store, queue), selection, s.operator.dlq_read_limit
            )
        now = datetime.now(UTC)
        if group:
            groups = group_by_fingerprint(letters)
            _out(as_json, [g.to_json() for g in groups], lambda: render.groups_table(groups, now))
        else:
            _out(as_json, [dl.to_json() for dl in letters],
                 lambda: render.letters_table(letters, now, title=f"{len(letters)} dead letter(s)"))
        return 0

    _run(main)


@app.command("show")
def show_cmd(
    message_id: Annotated[str, typer.Argument(help="The message id (= event id).")],
    queue: QueueOpt = None, as_json: JsonOpt = False,
) -> None:
    """Headers, body, failure reason, traceback, attempts and replay history of a dead letter."""
    from amsctl.dlq import render
    from amsctl.dlq.service import read, resolve_queues

    async def main(s: Settings) -> int:
        async with _store(s) as store:
            letters = await read(store, resolve_queues(store, queue),
                                  Selection(message_ids=frozenset({message_id})),
                                  s.operator.dlq_read_limit)
        if not letters:
            raise NotFound(f"no dead letter with message id {message_id}")
        audit = AuditLog.at(s.operator.audit_log).history(message_id)
        if as_json:
            print_json([dl.to_json(full=True) | {"audit": audit} for dl in letters])
        else:
            now = datetime.now(UTC)
            for dl in letters:
                console.print(render.letter_panel(dl, now, audit))
        return 0

    _run(main)


@app.command("history")
def history_cmd(
    message_id: Annotated[str, typer.Argument(help="The message id (= event id).")],
    as_json: JsonOpt = False,
) -> None:
    """Every replay and purge of one message, from the audit log."""
    from amsctl.dlq import render

    entries = AuditLog.at(settings().operator.audit_log).history(message_id)
    if as_json:
        print_json(entries)
    else:
        console.print(render.replays_table((), entries))
    raise typer.Exit(0 if entries else EXIT_NOT_FOUND)


@app.command("replay")
def replay_cmd(
    *, message_id: IdOpt = None, queue: QueueOpt = None,
    all_queues: AllOpt = False,
    routing_key: KeyOpt = None, error: ErrorOpt = None, older_than: OlderOpt = None,
    newer_than: NewerOpt = None, fingerprint: FpOpt = None, max_count: MaxOpt = None,
    dry_run: DryOpt = False,
    reason: ReasonOpt = None, as_json: JsonOpt = False,
    yes: Annotated[bool, typer.Option(
        "--yes", "-y", help="With --all: do not ask for confirmation.")] = False,
) -> None:
    """Send dead letters back to the queue they failed in (confirm first, then remove).

    --all asks for confirmation at a terminal; without one, --yes is required.
    """
    from amsctl.dlq import service

    if not (message_id or queue or all_queues):
        fail("say what to replay: --message-id ID, --queue Q or --all", EXIT_USAGE)
    if all_queues and not dry_run:
        confirm("Replay the selected dead letters of every dead-letter queue?", yes)
    selection = _selection(ids=message_id, key=routing_key, error=error, older=older_than,
                           newer=newer_than, fingerprint=fingerprint)
    request = service.MoveRequest(service.REPLAY, queue, selection, max_count, reason)
    _run(lambda s: _move(s, request, dry_run=dry_run, as_json=as_json))


@app.command("purge")
def purge_cmd(
    *, message_id: IdOpt = None, queue: QueueOpt = None, routing_key: KeyOpt = None,
    error: ErrorOpt = None, older_than: OlderOpt = None, newer_than: NewerOpt = None,
    fingerprint: FpOpt = None, max_count: MaxOpt = None,
    yes: YesOpt = False,
    reason: ReasonOpt = None, as_json: JsonOpt = False,
) -> None:
    """Remove exactly the selected dead letters and print what was removed."""
    from amsctl.dlq import service

    if not (message_id or queue):
        fail("say what to purge: --message-id ID or --queue Q", EXIT_USAGE)
    selection = _selection(ids=message_id, key=routing_key, error=error, older=older_than,
                           newer=newer_than, fingerprint=fingerprint)

    async def main(s: Settings) -> int:
        request = service.MoveRequest(service.PURGE, queue, selection, max_count, reason)
        code = await _move(s, request, dry_run=not yes, as_json=as_json)
        return code if yes or code else EXIT_USAGE

    if not yes:
        err_console.print("[yellow]purge removes messages for good; re-run with --yes[/]")
    _run(main)


# --- replay / purge engine ------------------------------------------------------------


async def _move(s: Settings, req: service.MoveRequest, *, dry_run: bool, as_json: bool) -> int:
    from amsctl.audit import trail
    from amsctl.dlq import service
    from amsctl.dlq.service import resolve_queues

    async with _store(s) as store:
        queues = resolve_queues(store, req.queues)
        if dry_run:
            return _print_plan(await service.preview(store, queues, req, s.operator.dlq_read_limit),
                               req, as_json)
        async with trail(s) as audit_trail:  # before any change: no unrecorded action
            with _Progress(as_json, sum(q.messages for q in queues), req.action) as advance:
                result = await service.move(store, s, queues, req, audit_trail,
                                            on_window=lambda window: advance(len(window)))
    _report(result.outcomes, req.action, result.op_id, as_json)
    if result.failed:
        return EXIT_FAILURE
    return EXIT_NOT_FOUND if req.selection.message_ids and not result.outcomes else 0


def _print_plan(letters: list[DeadLetter], req: service.MoveRequest, as_json: bool) -> int:
    from amsctl.dlq import render, service

    replay = req.action == service.REPLAY
    if as_json:
        print_json({"dry_run": True, "action": req.action, "messages": [
            dl.to_json() | {"target": dl.failed_queue if replay else None} for dl in letters
        ]})
    else:
        console.print(render.plan_table(letters, action=req.action))
        verb = "replayed" if replay else "purged"
        console.print(f"{len(letters)} message(s) would be {verb}")
    return EXIT_NOT_FOUND if req.selection.message_ids and not letters else 0


def _report(outcomes: list[Outcome], action: str, op_id: str, as_json: bool) -> None:
    from amsctl.dlq import render

    if as_json:
        ok = sum(o.ok for o in outcomes)
        print_json({"op_id": op_id, "action": action, "ok": ok, "failed": len(outcomes) - ok,
                    "messages": [o.to_json() for o in outcomes]})
        return
    verb = "replayed" if action == "replay" else "purged"
    failed = [o for o in outcomes if not o.ok]
    if action == "purge":
        console.print(render.outcomes_table(outcomes, title="removed"))
    elif failed:
        console.print(render.outcomes_table(failed, title="not replayed (still dead-lettered)"))
    render.print_summary(console, outcomes, verb=verb)
    console.print(f"audit: op {op_id}")


class _Progress:
    """A progress bar on stderr for people; silent for --json or when not a terminal."""

    def __init__(self, as_json: bool, total: int, action: str) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._bar = Progress(TextColumn(f"{action}"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), console=err_console, transient=True,
                             disable=as_json or not err_console.is_terminal)
        self._task = self._bar.add_task(action, total=total or None)

    def __enter__(self) -> Callable[[int], None]:
        self._bar.start()
        return lambda n: self._bar.advance(self._task, n)

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()


def _out(as_json: bool, data: Any, table: Callable[[], Any]) -> None:
    if as_json:
        print_json(data)
    else:
        console.print(table())
