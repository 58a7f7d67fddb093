"""The user-deletion saga orchestrator: consumer ``saga`` on authdb, and its timeout sweeper.

A state machine over the ``sagas`` and ``saga_steps`` rows (:mod:`apps.auth.sagas`). Every
transition runs in the runtime's transaction together with the inbox row, after locking
the saga row (``FOR UPDATE``), and sends the next command through the authdb outbox in
that same transaction; so a crash anywhere either loses the whole transition (the reply
is delivered again) or none of it.

Happy path: ``profile.deleted`` -> send ``documents.delete``; ``documents.deleted`` -> mark
the user deleted (authdb, local step) -> ``user.deleted``; status ``completed``.

Failure: ``documents.deletion_failed`` (legal hold) or an overdue step (the sweeper) ->
status ``compensating``, send ``profile.restore``; ``profile.restored`` -> reactivate the
user (local) -> status ``compensated``, the reason kept. A compensation that misses its
own deadline (the profiles worker retried it and dead-lettered it) ends the saga in
``compensation_failed``, naming the dead-letter queue. If the operator later replays that
dead letter, the late ``profile.restored`` still finishes the compensation.

Replies are recognised by (saga, step): one for a step that is no longer pending (a
duplicate, a reply after a timeout, a reply for a step never started) changes nothing
but the step's ``late_replies`` count and a warning in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any

import sqlalchemy as sa
from prometheus_client import Gauge
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from apps.auth.models import saga_steps, sagas
from apps.auth.sagas import (
    DOCUMENTS_DELETE,
    PROFILE_DELETE,
    PROFILE_RESTORE,
    USER_DELETE,
    USER_REACTIVATE,
    count_by_status,
    finish_step,
    start_step,
)
from shared.config import Settings
from shared.db import create_engine, session_factory
from shared.events import (
    DeleteDocuments,
    DeleteProfile,
    DocumentsDeleted,
    DocumentsDeletionFailed,
    ProfileDeleted,
    ProfileRestored,
    RestoreProfile,
    UserDeleted,
    UserDeletionRequested,
)
from shared.logging import get_logger
from shared.topology import consumer_spec
from workers.runtime.consumer import Consumer
from workers.runtime.context import MessageContext

log = get_logger(__name__)

SWEEP_BATCH = 100
"""Overdue sagas handled per sweeper transaction."""
GAUGE_EVERY_S = 15.0
"""How often the sweeper recounts the sagas per status (a scan of the sagas table)."""

SAGAS = Gauge(
    "ams_saga_sagas", "Deletion sagas per status in authdb (recounted every 15 s).", ["status"],
    multiprocess_mode="livemax",
)


def compensation_failed_reason() -> str:
    dlq = consumer_spec("profiles").dlq_name
    return f"{PROFILE_RESTORE} did not complete; see dead-letter queue {dlq}"


async def _lock(session: AsyncSession, saga_id: uuid.UUID) -> Any:
    query = sa.select(sagas).where(sagas.c.id == saga_id).with_for_update()
    return (await session.execute(query)).first()


async def _note_late(session: AsyncSession, saga_id: uuid.UUID, step: str, reply: str) -> None:
    await session.execute(
        sa.update(saga_steps)
        .where(saga_steps.c.saga_id == saga_id, saga_steps.c.name == step)
        .values(late_replies=saga_steps.c.late_replies + 1)
    )
    log.warning("saga.reply_ignored", saga_id=str(saga_id), step=step, reply=reply)


async def _set_status(
    session: AsyncSession, saga_id: uuid.UUID, status: str, *, reason: str | None = None,
    final: bool = False,
) -> None:
    values: dict[str, Any] = {"status": status, "updated_at": sa.func.now()}
    if reason is not None:
        values["reason"] = reason
    if final:
        values.update(finished_at=sa.func.now(), step_deadline=None, current_step=None)
    await session.execute(sa.update(sagas).where(sagas.c.id == saga_id).values(**values))
    log.info("saga.status", saga_id=str(saga_id), status=status, reason=reason)


async def _local_step(session: AsyncSession, saga_id: uuid.UUID, name: str, kind: str) -> None:
    await start_step(session, saga_id, name, kind=kind)
    await finish_step(session, saga_id, name, "completed")


class Orchestrator:
    """The transitions; timeouts come from the settings."""

    def __init__(self, *, step_timeout_s: float, compensation_timeout_s: float) -> None:
        self.step_timeout_s = step_timeout_s
        self.compensation_timeout_s = compensation_timeout_s

    @classmethod
    def from_settings(cls, settings: Settings) -> Orchestrator:
        return cls(
            step_timeout_s=settings.saga_step_timeout_s,
            compensation_timeout_s=settings.saga_compensation_timeout_s,
        )

    # --- handlers (runtime transaction, inbox row already written) ------------------------
    async def on_deletion_requested(
        self, session: AsyncSession, message: UserDeletionRequested, ctx: MessageContext
    ) -> None:
        """The API started the saga in its own transaction; start it here only if it did not."""
        saga = await _lock(session, message.saga_id)
        if saga is None:
            log.warning("saga.unknown", saga_id=str(message.saga_id))
            return
        if saga.current_step is None and saga.status == "running":
            await start_step(
                session, saga.id, PROFILE_DELETE, timeout_s=self.step_timeout_s,
                command=DeleteProfile(saga_id=saga.id, user_id=saga.user_id),
                headers=ctx.follow_up_headers(),
            )

    async def on_profile_deleted(
        self, session: AsyncSession, message: ProfileDeleted, ctx: MessageContext
    ) -> None:
        saga = await _lock(session, message.saga_id)
        if not await self._accept(session, saga, message.saga_id, PROFILE_DELETE, "running", ctx):
            return
        await finish_step(session, saga.id, PROFILE_DELETE, "completed")
        await start_step(
            session, saga.id, DOCUMENTS_DELETE, timeout_s=self.step_timeout_s,
            command=DeleteDocuments(saga_id=saga.id, user_id=saga.user_id),
            headers=ctx.follow_up_headers(),
        )

    async def on_documents_deleted(
        self, session: AsyncSession, message: DocumentsDeleted, ctx: MessageContext
    ) -> None:
        saga = await _lock(session, message.saga_id)
        if not await self._accept(session, saga, message.saga_id, DOCUMENTS_DELETE, "running", ctx):
            return
        await finish_step(
            session, saga.id, DOCUMENTS_DELETE, "completed", f"{message.count} document(s) deleted"
        )
        await _local_step(session, saga.id, USER_DELETE, "action")
        await session.execute(_DELETE_USER, {"user_id": saga.user_id})
        await _set_status(session, saga.id, "completed", final=True)
        await ctx.emit(session, UserDeleted(user_id=saga.user_id, saga_id=saga.id))

    async def on_documents_deletion_failed(
        self, session: AsyncSession, message: DocumentsDeletionFailed, ctx: MessageContext
    ) -> None:
        saga = await _lock(session, message.saga_id)
        if not await self._accept(session, saga, message.saga_id, DOCUMENTS_DELETE, "running", ctx):
            return
        await finish_step(session, saga.id, DOCUMENTS_DELETE, "failed", message.reason)
        await self.compensate(
            session, saga, f"{DOCUMENTS_DELETE} failed: {message.reason}", ctx.follow_up_headers()
        )

    async def on_profile_restored(
        self, session: AsyncSession, message: ProfileRestored, ctx: MessageContext
    ) -> None:
        saga = await _lock(session, message.saga_id)
        if saga is not None and saga.status == "compensation_failed":
            # The operator replayed the dead letter: the compensation did complete after all.
            recovered = await session.execute(
                sa.update(saga_steps)
                .where(
                    saga_steps.c.saga_id == saga.id,
                    saga_steps.c.name == PROFILE_RESTORE,
                    saga_steps.c.status == "timed_out",
                )
                .values(status="completed", finished_at=sa.func.now(),
                        detail="completed after the deadline (dead letter replayed)")
                .returning(saga_steps.c.name)
            )
            if recovered.first() is not None:
                await self._reactivate(session, saga, f"{saga.reason}; recovered later")
                return
        if not await self._accept(
            session, saga, message.saga_id, PROFILE_RESTORE, "compensating", ctx
        ):
            return
        await finish_step(session, saga.id, PROFILE_RESTORE, "completed")
        await self._reactivate(session, saga, None)

    # --- transitions ------------------------------------------------------------------------
    async def _accept(  # noqa: PLR0917 - the reply's full identity
        self, session: AsyncSession, saga: Any, saga_id: uuid.UUID, step: str, status: str,
        ctx: MessageContext,
    ) -> bool:
        """Is this reply the one the saga waits for? Otherwise record it as late/duplicate."""
        if saga is None:
            log.warning("saga.unknown", saga_id=str(saga_id), reply=ctx.event_type)
            return False
        pending = (
            await session.execute(
                sa.select(saga_steps.c.status).where(
                    saga_steps.c.saga_id == saga_id, saga_steps.c.name == step
                )
            )
        ).scalar_one_or_none()
        if saga.status == status and pending == "pending":
            return True
        await _note_late(session, saga_id, step, ctx.event_type)
        return False

    async def compensate(
        self, session: AsyncSession, saga: Any, reason: str, headers: dict[str, str] | None = None
    ) -> None:
        """Undo the completed steps in reverse: restore the profile (then reactivate, later)."""
        await _set_status(session, saga.id, "compensating", reason=reason)
        await start_step(
            session, saga.id, PROFILE_RESTORE, kind="compensation",
            timeout_s=self.compensation_timeout_s,
            command=RestoreProfile(saga_id=saga.id, user_id=saga.user_id), headers=headers,
        )

    async def _reactivate(self, session: AsyncSession, saga: Any, reason: str | None) -> None:
        await _local_step(session, saga.id, USER_REACTIVATE, "compensation")
        await session.execute(_REACTIVATE_USER, {"user_id": saga.user_id})
        await _set_status(session, saga.id, "compensated", reason=reason, final=True)

    # --- timeouts ---------------------------------------------------------------------------
    async def sweep(self, sessions: async_sessionmaker[AsyncSession]) -> int:
        """Fail the overdue steps of one batch of sagas; returns how many were handled.

        Safe with several sweepers: each locks its batch with ``SKIP LOCKED``, and a saga
        a handler is moving forward right now is locked too, so it is skipped.
        """
        async with sessions() as session, session.begin():
            overdue = (await session.execute(_OVERDUE, {"limit": SWEEP_BATCH})).all()
            for saga in overdue:
                await self._time_out(session, saga)
        return len(overdue)

    async def _time_out(self, session: AsyncSession, saga: Any) -> None:
        step = saga.current_step
        if saga.status == "running":
            timeout = self.step_timeout_s
            detail = f"no reply within {timeout:g}s"
            await finish_step(session, saga.id, step, "timed_out", detail)
            log.warning("saga.step_timed_out", saga_id=str(saga.id), step=step)
            await self.compensate(session, saga, f"{step} did not answer within {timeout:g}s")
            return
        detail = f"not completed within {self.compensation_timeout_s:g}s"
        await finish_step(session, saga.id, step, "timed_out", detail)
        reason = compensation_failed_reason()
        log.error("saga.compensation_failed", saga_id=str(saga.id), step=step, reason=reason)
        await _set_status(session, saga.id, "compensation_failed", reason=reason, final=True)


_OVERDUE = sa.text(
    """
    SELECT id, user_id, status, current_step, reason FROM sagas
    WHERE status IN ('running', 'compensating') AND step_deadline < now()
    ORDER BY step_deadline
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
    """
)

# The account is scrubbed, not removed: sagas and refresh families still refer to it.
_DELETE_USER = sa.text(
    """
    UPDATE users SET status = 'deleted', updated_at = now(), display_name = NULL,
      password_hash = '!', email = 'deleted-' || id::text || '@deleted.invalid'
    WHERE id = :user_id AND status = 'deleting'
    """
)
_REACTIVATE_USER = sa.text(
    "UPDATE users SET status = 'active', updated_at = now() "
    "WHERE id = :user_id AND status = 'deleting'"
)


class Sweeper:
    """Runs :meth:`Orchestrator.sweep` every ``interval_s`` until stopped."""

    def __init__(
        self, orchestrator: Orchestrator, sessions: async_sessionmaker[AsyncSession],
        interval_s: float,
    ) -> None:
        self._orchestrator = orchestrator
        self._sessions = sessions
        self._interval_s = interval_s

    async def run(self, stop: asyncio.Event) -> None:
        next_count = 0.0
        while not stop.is_set():
            if time.monotonic() >= next_count:
                next_count = time.monotonic() + GAUGE_EVERY_S
                await self._count()
            try:
                handled = await self._orchestrator.sweep(self._sessions)
            except Exception as exc:
                log.warning("saga.sweep_failed", error=repr(exc))
                handled = 0
            if handled:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval_s)


    async def _count(self) -> None:
        try:
            async with self._sessions() as session:
                counts = await count_by_status(session)
        except Exception as exc:  # the gauge keeps its last value; the sweep logs outages
            log.debug("saga.count_failed", error=repr(exc))
            return
        for status, n in counts.items():
            SAGAS.labels(status).set(n)


class SagaConsumer(Consumer):
    """The ``saga`` consumer plus its timeout sweeper in the same process."""

    def __init__(self, settings: Settings) -> None:
        self.orchestrator = Orchestrator.from_settings(settings)
        o = self.orchestrator
        super().__init__(
            name="saga",
            database="authdb",
            handlers={
                UserDeletionRequested: o.on_deletion_requested,
                ProfileDeleted: o.on_profile_deleted,
                DocumentsDeleted: o.on_documents_deleted,
                DocumentsDeletionFailed: o.on_documents_deletion_failed,
                ProfileRestored: o.on_profile_restored,
            },
        )

    async def run(self, settings: Settings, partition: int = 0) -> None:
        engine = create_engine(settings.auth_database_url, pool_size=1)
        interval = settings.saga_sweep_interval_s
        sweeper = Sweeper(self.orchestrator, session_factory(engine), interval)
        stop = asyncio.Event()
        task = asyncio.create_task(sweeper.run(stop))
        try:
            await super().run(settings, partition)
        finally:
            stop.set()
            await task
            await engine.dispose()


def consumer(settings: Settings) -> Consumer:
    """The ``saga`` consumer (authdb)."""
    return SagaConsumer(settings)


__all__ = ["Orchestrator", "SagaConsumer", "Sweeper", "compensation_failed_reason", "consumer"]
