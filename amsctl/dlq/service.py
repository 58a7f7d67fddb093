"""Dead letters as operations, for every operator surface (the ``amsctl dlq`` CLI, the console).

Reading, previewing, replaying and purging live here once, so both surfaces keep the same
guarantees: a replay publishes each message with a publisher confirm to the queue it failed
in before that message is removed from its dead-letter queue (:mod:`amsctl.dlq.broker`); a
purge removes exactly the selected messages; every change is recorded in the operator audit
table in authdb (opened before anything moves: :func:`amsctl.audit.trail`) and, window by
window, in the local JSON-lines log. Presentation (tables, progress bars, pages) stays with
the caller.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from amsctl.audit import Trail, run_audited
from amsctl.dlq.audit import AuditLog, Operation
from amsctl.dlq.broker import DeadLetterStore, MovePlan, Outcome, QueueInfo
from amsctl.dlq.model import DeadLetter, Selection, is_dlq_name
from apps.auth.audit import AuditOutcome
from shared.config import Settings
from shared.errors import NotFound

REPLAY = "replay"
PURGE = "purge"


class UsageError(Exception):
    """The request makes no sense (not a dead-letter queue, nothing said what to move)."""


@dataclass(frozen=True)
class MoveRequest:
    """A replay or purge as the operator asked for it."""

    action: str
    """``replay`` or ``purge``."""
    queues: list[str] | None
    """Dead-letter queues to work on; ``None`` = every one."""
    selection: Selection
    max_count: int | None = None
    reason: str | None = None
    actor: str | None = None
    """Who asks (the console's signed-in admin); ``None`` = the OS user and host."""


@dataclass(frozen=True)
class MoveResult:
    op_id: str
    outcomes: list[Outcome]

    @property
    def failed(self) -> int:
        return sum(not o.ok for o in self.outcomes)

    @property
    def moved(self) -> int:
        return len(self.outcomes) - self.failed


def resolve_queues(store: DeadLetterStore, requested: list[str] | None) -> list[QueueInfo]:
    """The requested dead-letter queues (all of them when none is named); refuses others."""
    dlqs = {q.name: q for q in store.dead_letter_queues()}
    chosen = []
    for name in requested or sorted(dlqs):
        if name in dlqs:
            chosen.append(dlqs[name])
        elif not is_dlq_name(name):
            hint = f"; did you mean {name}.dlq?" if f"{name}.dlq" in dlqs else ""
            raise UsageError(f"{name!r} is not a dead-letter queue (their names end in .dlq){hint}")
        else:
            raise NotFound(f"dead-letter queue {name!r} does not exist")
    return chosen


async def read(store: DeadLetterStore, queues: list[QueueInfo], selection: Selection,
               limit: int) -> list[DeadLetter]:
    """The selected dead letters, read without removing or reordering anything."""
    now = datetime.now(UTC)
    letters = []
    for q in queues:
        found = await store.browse(q.name, limit=limit)
        letters += [dl for dl in found if selection.matches(dl, now)]
    return letters


async def preview(store: DeadLetterStore, queues: list[QueueInfo], req: MoveRequest,
                  read_limit: int) -> list[DeadLetter]:
    """What :func:`move` would touch (a dry run: nothing changes). Each letter's
    ``failed_queue`` is where a replay sends it."""
    return (await read(store, queues, req.selection, read_limit))[: req.max_count]


async def move(
    store: DeadLetterStore, settings: Settings, queues: list[QueueInfo], req: MoveRequest,
    trail: Trail, *, on_window: Callable[[list[Outcome]], None] | None = None,
) -> MoveResult:
    """Replay or purge the selected dead letters, window by window, audited.

    ``trail`` is open (the audit table was reachable) before this is called. The JSON-lines
    ``start`` record is written before anything moves (a log that cannot be written stops the
    operation: ``OSError``); each settled window is logged before the caller hears of it; the
    audit table gets one row with the outcome (ok, partial, failed) and the message ids.
    """
    op = AuditLog.at(settings.operator.audit_log).begin(
        req.action, reason=req.reason, actor=req.actor,
        details={"selection": req.selection.describe(), "queues": [q.name for q in queues],
                 "max": req.max_count},
    )
    target = ",".join(q.name for q in queues)
    outcomes = await run_audited(
        trail, f"dlq.{req.action}", target,
        lambda: _move_queues(store, settings, queues, req, op, on_window=on_window),
        details={"op_id": op.op_id, "reason": req.reason, "max": req.max_count,
                 "selection": req.selection.describe()},
        outcome_of=lambda done: (target, *_summary(done)),
    )
    result = MoveResult(op.op_id, outcomes)
    op.write("end", outcome="ok" if not result.failed else "partial",
             moved=result.moved, failed=result.failed)
    return result


async def _move_queues(
    store: DeadLetterStore, settings: Settings, queues: list[QueueInfo], req: MoveRequest,
    op: Operation, *, on_window: Callable[[list[Outcome]], None] | None,
) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for q in queues:
        remaining = None if req.max_count is None else req.max_count - len(outcomes)
        if remaining == 0:
            break

        def settled(window: list[Outcome]) -> None:
            op.write("messages", messages=[o.to_json() for o in window])
            if on_window is not None:
                on_window(window)

        plan = _plan_for(q, req, remaining, op, settings)
        outcomes += await store.move(q.name, plan, settled)
    return outcomes


_AUDIT_IDS = 200
"""At most this many message ids per audit row (the JSON-lines log has them all)."""


def _summary(outcomes: list[Outcome]) -> tuple[AuditOutcome, dict[str, Any]]:
    failed = [o for o in outcomes if not o.ok]
    done = [o for o in outcomes if o.ok]
    outcome = AuditOutcome.OK if not failed else (
        AuditOutcome.PARTIAL if done else AuditOutcome.FAILED)
    return outcome, {
        "moved": len(done), "failed": len(failed),
        "message_ids": [o.message_id for o in done[:_AUDIT_IDS]],
        "failed_ids": [o.message_id for o in failed[:_AUDIT_IDS]],
    }


def _plan_for(q: QueueInfo, req: MoveRequest, remaining: int | None, op: Operation,
              settings: Settings) -> MovePlan:
    now = datetime.now(UTC)

    def select(dl: DeadLetter) -> bool:
        # A message this very run replayed that failed again is left for the operator.
        already = any(r.get("op") == op.op_id for r in dl.replays)
        return req.selection.matches(dl, now) and not already

    stamp = None
    if req.action == REPLAY:
        stamp = {"at": now.isoformat(), "by": op.who, "from": q.name, "to": q.work_queue,
                 "op": op.op_id, "reason": req.reason or ""}
    return MovePlan(select=select, replay_stamp=stamp, max_count=remaining,
                    window=max(1, settings.operator.dlq_replay_window))


def history(settings: Settings, message_id: str) -> list[dict[str, object]]:
    """Every replay and purge of one message, from the audit log, oldest first."""
    return AuditLog.at(settings.operator.audit_log).history(message_id)
