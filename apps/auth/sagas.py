"""The user-deletion saga's records in authdb: starting one, reading one, listing them.

The orchestrator (``workers/saga.py``) moves a saga forward; this module holds what the
auth API and ``amsctl saga`` share with it: the step names, the tables' shape as values,
and :func:`start_deletion`, which the API runs in the same transaction that marks the
user ``deleting``.

Steps, in order (``seq``): ``profile.delete`` (apidb, via the profiles worker),
``documents.delete`` (admindb, via the documents worker), ``user.delete`` (authdb, done by
the orchestrator itself). Compensations, in reverse: ``profile.restore`` (profiles
worker), ``user.reactivate`` (authdb, local).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

import outbox
from apps.auth.models import saga_steps, sagas
from shared.events import DeleteProfile, Message, UserDeletionRequested

PROFILE_DELETE = "profile.delete"
DOCUMENTS_DELETE = "documents.delete"
USER_DELETE = "user.delete"
PROFILE_RESTORE = "profile.restore"
USER_REACTIVATE = "user.reactivate"

STEP_SEQ = {
    PROFILE_DELETE: 1,
    DOCUMENTS_DELETE: 2,
    USER_DELETE: 3,
    PROFILE_RESTORE: 4,
    USER_REACTIVATE: 5,
}
"""Order of the steps as the saga runs them (compensations after the actions)."""

ACTIVE = ("running", "compensating")
FINAL = ("completed", "compensated", "compensation_failed")


@dataclass(frozen=True)
class StepView:
    name: str
    kind: str
    status: str
    detail: str | None
    started_at: datetime
    deadline: datetime | None
    finished_at: datetime | None
    late_replies: int


@dataclass(frozen=True)
class SagaView:
    saga_id: uuid.UUID
    user_id: uuid.UUID
    requested_by: uuid.UUID | None
    status: str
    current_step: str | None
    step_deadline: datetime | None
    reason: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    steps: list[StepView]

    def as_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "steps"}
        data["steps"] = [s.__dict__ for s in self.steps]
        return data


def deadline_in(seconds: float, now: datetime | None = None) -> datetime:
    return (now or datetime.now(UTC)) + timedelta(seconds=seconds)


async def start_step(
    session: AsyncSession,
    saga_id: uuid.UUID,
    name: str,
    *,
    kind: str = "action",
    timeout_s: float | None = None,
    command: Message | None = None,
    headers: dict[str, str] | None = None,
) -> datetime | None:
    """Record step ``name`` as pending, make it the saga's current step, emit its command.

    A local step (no command) has no deadline. Returns the deadline.
    """
    deadline = deadline_in(timeout_s) if timeout_s is not None else None
    command_id = None
    if command is not None:
        if deadline is not None and hasattr(command, "deadline"):
            command = _with_deadline(command, deadline)
        command_id = await outbox.add_event(session, command, headers=headers)
    await session.execute(
        sa.insert(saga_steps).values(
            saga_id=saga_id, name=name, seq=STEP_SEQ[name], kind=kind, status="pending",
            command_id=command_id, deadline=deadline,
        )
    )
    await session.execute(
        sa.update(sagas)
        .where(sagas.c.id == saga_id)
        .values(current_step=name, step_deadline=deadline, updated_at=sa.func.now())
    )
    return deadline


def _with_deadline(command: Message, deadline: datetime) -> Message:
    import msgspec  # noqa: PLC0415 - only for this copy

    return msgspec.structs.replace(command, deadline=deadline)


async def finish_step(
    session: AsyncSession, saga_id: uuid.UUID, name: str, status: str, detail: str | None = None
) -> bool:
    """Pending -> ``status``; False when the step was not pending (a duplicate or late reply)."""
    result = await session.execute(
        sa.update(saga_steps)
        .where(
            saga_steps.c.saga_id == saga_id,
            saga_steps.c.name == name,
            saga_steps.c.status == "pending",
        )
        .values(status=status, detail=detail, finished_at=sa.func.now())
        .returning(saga_steps.c.name)
    )
    return result.first() is not None


async def start_deletion(
    session: AsyncSession,
    user_id: uuid.UUID,
    *,
    requested_by: uuid.UUID | None,
    step_timeout_s: float,
) -> uuid.UUID:
    """Create the saga and send its first command, in the caller's transaction."""
    saga_id = uuid.uuid4()
    await session.execute(
        sa.insert(sagas).values(
            id=saga_id, user_id=user_id, requested_by=requested_by, status="running"
        )
    )
    await outbox.add_event(
        session, UserDeletionRequested(user_id=user_id, saga_id=saga_id, requested_by=requested_by)
    )
    await start_step(
        session, saga_id, PROFILE_DELETE, timeout_s=step_timeout_s,
        command=DeleteProfile(saga_id=saga_id, user_id=user_id),
    )
    return saga_id


async def active_saga_of(session: AsyncSession, user_id: uuid.UUID) -> uuid.UUID | None:
    """The user's deletion saga in flight, if any."""
    query = sa.select(sagas.c.id).where(sagas.c.user_id == user_id, sagas.c.status.in_(ACTIVE))
    return (await session.execute(query)).scalar_one_or_none()


async def load(session: AsyncSession, saga_id: uuid.UUID) -> SagaView | None:
    """The saga with every step, in order; None when there is no such saga."""
    row = (await session.execute(sa.select(sagas).where(sagas.c.id == saga_id))).first()
    if row is None:
        return None
    steps = (
        await session.execute(
            sa.select(saga_steps)
            .where(saga_steps.c.saga_id == saga_id)
            .order_by(saga_steps.c.seq)
        )
    ).all()
    return _view(row, [_step(s) for s in steps])


async def list_sagas(
    session: AsyncSession, *, status: str | None = None, limit: int = 100
) -> list[SagaView]:
    """Newest first, without their steps."""
    query = sa.select(sagas).order_by(sagas.c.created_at.desc()).limit(limit)
    if status is not None:
        query = query.where(sagas.c.status == status)
    return [_view(r, []) for r in (await session.execute(query)).all()]


def _view(row: Any, steps: list[StepView]) -> SagaView:
    return SagaView(
        saga_id=row.id, user_id=row.user_id, requested_by=row.requested_by, status=row.status,
        current_step=row.current_step, step_deadline=row.step_deadline, reason=row.reason,
        created_at=row.created_at, updated_at=row.updated_at, finished_at=row.finished_at,
        steps=steps,
    )


def _step(row: Any) -> StepView:
    return StepView(
        name=row.name, kind=row.kind, status=row.status, detail=row.detail,
        started_at=row.started_at, deadline=row.deadline, finished_at=row.finished_at,
        late_replies=row.late_replies,
    )


async def count_by_status(session: AsyncSession) -> dict[str, int]:
    """Sagas per status, every status present (0 when none): the saga worker's gauge."""
    rows = await session.execute(
        sa.select(sagas.c.status, sa.func.count()).group_by(sagas.c.status)
    )
    counts = dict.fromkeys((*ACTIVE, *FINAL), 0)
    counts.update({str(status): int(n) for status, n in rows})
    return counts
