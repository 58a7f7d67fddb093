"""The user-deletion saga's records in authdb: starting one, moving one, reading them.

The orchestrator (``workers/saga.py``) decides the transitions; every statement it runs on
``sagas``, ``saga_steps`` and ``users`` is here, behind :class:`SagaStore` (the SQL adapter
:class:`SqlSagaStore`; tests use a fake). The auth API and ``amsctl saga`` share the step
names, the read views and :func:`start_deletion`, which the API runs in the same
transaction that marks the user ``deleting``.

Steps, in order (``seq``): ``profile.delete`` (apidb, via the profiles worker),
``documents.delete`` (admindb, via the documents worker), ``user.delete`` (authdb, done by
the orchestrator itself). Compensations, in reverse: ``profile.restore`` (profiles
worker), ``user.reactivate`` (authdb, local).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from apps.auth.models import SagaStatus, StepStatus, UserStatus, saga_steps, sagas, users
from apps.auth.schemas import Saga, SagaStep
from outbox.writer import Emit, Emitter
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

ACTIVE = (SagaStatus.RUNNING, SagaStatus.COMPENSATING)


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
    emit: Emit | None = None,
) -> datetime | None:
    """Record step ``name`` as pending, make it the saga's current step, emit its command
    through ``emit`` (which sets its correlation and causation: ``ctx.emit`` of the message
    that moves the saga on).

    A local step (no command) has no deadline. Returns the deadline.
    """
    deadline = deadline_in(timeout_s) if timeout_s is not None else None
    command_id = None
    if command is not None:
        if emit is None:
            raise TypeError(f"step {name!r} sends {command.event_type!r}: it needs an emit")
        if deadline is not None and hasattr(command, "deadline"):
            command = _with_deadline(command, deadline)
        command_id = await emit(session, command)
    await session.execute(
        sa.insert(saga_steps).values(
            saga_id=saga_id, name=name, seq=STEP_SEQ[name], kind=kind,
            status=StepStatus.PENDING,
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
    session: AsyncSession, saga_id: uuid.UUID, name: str, status: StepStatus,
    detail: str | None = None,
) -> bool:
    """Pending -> ``status``; False when the step was not pending (a duplicate or late reply)."""
    result = await session.execute(
        sa.update(saga_steps)
        .where(
            saga_steps.c.saga_id == saga_id,
            saga_steps.c.name == name,
            saga_steps.c.status == StepStatus.PENDING,
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
    """Create the saga and send its first command, in the caller's transaction (the
    request's correlation id on both events)."""
    saga_id = uuid.uuid4()
    emit = Emitter.current()
    await session.execute(
        sa.insert(sagas).values(
            id=saga_id, user_id=user_id, requested_by=requested_by, status=SagaStatus.RUNNING
        )
    )
    await emit(
        session, UserDeletionRequested(user_id=user_id, saga_id=saga_id, requested_by=requested_by)
    )
    await start_step(
        session, saga_id, PROFILE_DELETE, timeout_s=step_timeout_s,
        command=DeleteProfile(saga_id=saga_id, user_id=user_id), emit=emit,
    )
    return saga_id


async def active_saga_of(session: AsyncSession, user_id: uuid.UUID) -> uuid.UUID | None:
    """The user's deletion saga in flight, if any."""
    query = sa.select(sagas.c.id).where(sagas.c.user_id == user_id, sagas.c.status.in_(ACTIVE))
    return (await session.execute(query)).scalar_one_or_none()


async def load(session: AsyncSession, saga_id: uuid.UUID) -> Saga | None:
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
) -> list[Saga]:
    """Newest first, without their steps."""
    query = sa.select(sagas).order_by(sagas.c.created_at.desc()).limit(limit)
    if status is not None:
        query = query.where(sagas.c.status == status)
    return [_view(r, []) for r in (await session.execute(query)).all()]


def _view(row: Any, steps: list[SagaStep]) -> Saga:
    return Saga(
        saga_id=row.id, user_id=row.user_id, requested_by=row.requested_by, status=row.status,
        current_step=row.current_step, step_deadline=row.step_deadline, reason=row.reason,
        created_at=row.created_at, updated_at=row.updated_at, finished_at=row.finished_at,
        steps=steps,
    )


def _step(row: Any) -> SagaStep:
    return SagaStep(
        name=row.name, kind=row.kind, status=row.status, detail=row.detail,
        started_at=row.started_at, deadline=row.deadline, finished_at=row.finished_at,
        late_replies=row.late_replies,
    )


async def count_by_status(session: AsyncSession) -> dict[str, int]:
    """Sagas per status, every status present (0 when none): the saga worker's gauge."""
    rows = await session.execute(
        sa.select(sagas.c.status, sa.func.count()).group_by(sagas.c.status)
    )
    counts = {str(status): 0 for status in SagaStatus}
    counts.update({str(status): int(n) for status, n in rows})
    return counts


# --- what the orchestrator runs -----------------------------------------------------------------
@dataclass(frozen=True)
class SagaState:
    """The fields of a saga that its transitions read."""

    id: uuid.UUID
    user_id: uuid.UUID
    status: SagaStatus
    current_step: str | None
    reason: str | None


class SagaStore(Protocol):
    """Every statement the orchestrator runs, each in the caller's transaction (``session``)."""

    async def lock(self, session: AsyncSession, saga_id: uuid.UUID) -> SagaState | None:
        """The saga, locked for this transaction (``FOR UPDATE``); None when unknown."""
        ...

    async def step_status(
        self, session: AsyncSession, saga_id: uuid.UUID, step: str
    ) -> StepStatus | None: ...

    async def start_step(  # noqa: PLR0917 - a step's full description
        self, session: AsyncSession, saga_id: uuid.UUID, name: str, kind: str = "action",
        timeout_s: float | None = None, command: Message | None = None,
        emit: Emit | None = None,
    ) -> datetime | None:
        """Step ``name`` pending and current; its command into the outbox through ``emit``
        (required with a command). The deadline."""
        ...

    async def finish_step(
        self, session: AsyncSession, saga_id: uuid.UUID, name: str, status: StepStatus,
        detail: str | None = None,
    ) -> bool:
        """Pending -> ``status``; False when the step was not pending."""
        ...

    async def recover_step(
        self, session: AsyncSession, saga_id: uuid.UUID, name: str, detail: str
    ) -> bool:
        """Timed out -> completed (a late reply after all); False when it was not timed out."""
        ...

    async def note_late_reply(self, session: AsyncSession, saga_id: uuid.UUID, step: str) -> None:
        """Count a reply that found its step no longer pending."""
        ...

    async def set_status(
        self, session: AsyncSession, saga_id: uuid.UUID, status: SagaStatus, *,
        reason: str | None = None, final: bool = False,
    ) -> None:
        """A new status (and reason); a final one also clears the current step and deadline."""
        ...

    async def overdue(self, session: AsyncSession, limit: int) -> list[SagaState]:
        """In-flight sagas past their step deadline, oldest deadline first, locked
        (``SKIP LOCKED``: several sweepers share the work)."""
        ...

    async def delete_user(self, session: AsyncSession, user_id: uuid.UUID) -> None:
        """Scrub a ``deleting`` account into a ``deleted`` one."""
        ...

    async def reactivate_user(self, session: AsyncSession, user_id: uuid.UUID) -> None:
        """A ``deleting`` account becomes ``active`` again."""
        ...


class SqlSagaStore:
    """:class:`SagaStore` on authdb."""

    async def lock(self, session: AsyncSession, saga_id: uuid.UUID) -> SagaState | None:
        query = sa.select(*_STATE).where(sagas.c.id == saga_id).with_for_update()
        row = (await session.execute(query)).first()
        return None if row is None else _state(row)

    async def step_status(
        self, session: AsyncSession, saga_id: uuid.UUID, step: str
    ) -> StepStatus | None:
        status = await session.scalar(
            sa.select(saga_steps.c.status).where(
                saga_steps.c.saga_id == saga_id, saga_steps.c.name == step
            )
        )
        return None if status is None else StepStatus(status)

    async def start_step(  # noqa: PLR0917 - a step's full description
        self, session: AsyncSession, saga_id: uuid.UUID, name: str, kind: str = "action",
        timeout_s: float | None = None, command: Message | None = None,
        emit: Emit | None = None,
    ) -> datetime | None:
        return await start_step(
            session, saga_id, name, kind=kind, timeout_s=timeout_s, command=command, emit=emit,
        )

    async def finish_step(
        self, session: AsyncSession, saga_id: uuid.UUID, name: str, status: StepStatus,
        detail: str | None = None,
    ) -> bool:
        return await finish_step(session, saga_id, name, status, detail)

    async def recover_step(
        self, session: AsyncSession, saga_id: uuid.UUID, name: str, detail: str
    ) -> bool:
        recovered = await session.execute(
            sa.update(saga_steps)
            .where(
                saga_steps.c.saga_id == saga_id,
                saga_steps.c.name == name,
                saga_steps.c.status == StepStatus.TIMED_OUT,
            )
            .values(status=StepStatus.COMPLETED, finished_at=sa.func.now(), detail=detail)
            .returning(saga_steps.c.name)
        )
        return recovered.first() is not None

    async def note_late_reply(self, session: AsyncSession, saga_id: uuid.UUID, step: str) -> None:
        await session.execute(
            sa.update(saga_steps)
            .where(saga_steps.c.saga_id == saga_id, saga_steps.c.name == step)
            .values(late_replies=saga_steps.c.late_replies + 1)
        )

    async def set_status(
        self, session: AsyncSession, saga_id: uuid.UUID, status: SagaStatus, *,
        reason: str | None = None, final: bool = False,
    ) -> None:
        values: dict[str, Any] = {"status": status, "updated_at": sa.func.now()}
        if reason is not None:
            values["reason"] = reason
        if final:
            values.update(finished_at=sa.func.now(), step_deadline=None, current_step=None)
        await session.execute(sa.update(sagas).where(sagas.c.id == saga_id).values(**values))

    async def overdue(self, session: AsyncSession, limit: int) -> list[SagaState]:
        query = (
            sa.select(*_STATE)
            .where(sagas.c.status.in_(ACTIVE), sagas.c.step_deadline < sa.func.now())
            .order_by(sagas.c.step_deadline)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [_state(row) for row in await session.execute(query)]

    async def delete_user(self, session: AsyncSession, user_id: uuid.UUID) -> None:
        # The account is scrubbed, not removed: sagas and refresh families still refer to it.
        await session.execute(
            sa.update(users)
            .where(users.c.id == user_id, users.c.status == UserStatus.DELETING)
            .values(
                status=UserStatus.DELETED, updated_at=sa.func.now(), display_name=None,
                password_hash="!",  # noqa: S106 - a hash that no password matches
                email=sa.literal("deleted-") + sa.cast(users.c.id, sa.Text)
                + sa.literal("@deleted.invalid"),
            )
        )

    async def reactivate_user(self, session: AsyncSession, user_id: uuid.UUID) -> None:
        await session.execute(
            sa.update(users)
            .where(users.c.id == user_id, users.c.status == UserStatus.DELETING)
            .values(status=UserStatus.ACTIVE, updated_at=sa.func.now())
        )


_STATE = (sagas.c.id, sagas.c.user_id, sagas.c.status, sagas.c.current_step, sagas.c.reason)


def _state(row: Any) -> SagaState:
    return SagaState(
        id=row.id, user_id=row.user_id, status=SagaStatus(row.status),
        current_step=row.current_step, reason=row.reason,
    )
