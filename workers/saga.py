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
but the step's ``late_replies`` count and a warning in the log. One exception: a
``documents.deleted`` that deleted documents after its step timed out (the documents worker
refuses a command past its deadline, but its reply can be held up after it acted). That
cannot be compensated: the saga ends in ``compensation_failed`` with a reason saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

from prometheus_client import Gauge
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from apps.auth.models import SagaStatus, StepStatus
from apps.auth.sagas import (
    DOCUMENTS_DELETE,
    PROFILE_DELETE,
    PROFILE_RESTORE,
    USER_DELETE,
    USER_REACTIVATE,
    SagaState,
    SagaStore,
    SqlSagaStore,
    count_by_status,
)
from shared import correlation
from shared.config import SagaSettings, Settings
from shared.db import session_factory
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
from workers.runtime.context import Emit, MessageContext, unprompted
from workers.runtime.sessions import runtime_engine

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


class Orchestrator:
    """The transitions, over a :class:`SagaStore`; timeouts come from the settings."""

    def __init__(
        self, store: SagaStore, *, step_timeout_s: float, compensation_timeout_s: float
    ) -> None:
        self.store = store
        self.step_timeout_s = step_timeout_s
        self.compensation_timeout_s = compensation_timeout_s

    @classmethod
    def from_settings(cls, settings: SagaSettings, store: SagaStore | None = None) -> Orchestrator:
        return cls(
            store or SqlSagaStore(),
            step_timeout_s=settings.step_timeout_s,
            compensation_timeout_s=settings.compensation_timeout_s,
        )

    # --- handlers (runtime transaction, inbox row already written) ------------------------
    async def on_deletion_requested(
        self, session: AsyncSession, message: UserDeletionRequested, ctx: MessageContext
    ) -> None:
        """The API started the saga in its own transaction; start it here only if it did not."""
        saga = await self.store.lock(session, message.saga_id)
        if saga is None:
            log.warning("saga.unknown", saga_id=str(message.saga_id))
            return
        if saga.current_step is None and saga.status == SagaStatus.RUNNING:
            await self.store.start_step(
                session, saga.id, PROFILE_DELETE, timeout_s=self.step_timeout_s,
                command=DeleteProfile(saga_id=saga.id, user_id=saga.user_id), emit=ctx.emit,
            )

    async def on_profile_deleted(
        self, session: AsyncSession, message: ProfileDeleted, ctx: MessageContext
    ) -> None:
        saga = await self._accept(session, message.saga_id, PROFILE_DELETE, SagaStatus.RUNNING, ctx)
        if saga is None:
            return
        await self.store.finish_step(session, saga.id, PROFILE_DELETE, StepStatus.COMPLETED)
        await self.store.start_step(
            session, saga.id, DOCUMENTS_DELETE, timeout_s=self.step_timeout_s,
            command=DeleteDocuments(saga_id=saga.id, user_id=saga.user_id), emit=ctx.emit,
        )

    async def on_documents_deleted(
        self, session: AsyncSession, message: DocumentsDeleted, ctx: MessageContext
    ) -> None:
        saga = await self.store.lock(session, message.saga_id)
        if (
            saga is not None
            and message.count > 0
            and saga.status != SagaStatus.RUNNING
            # The step had timed out: documents were deleted after the saga gave up on them.
            and await self.store.recover_step(
                session, saga.id, DOCUMENTS_DELETE,
                f"{message.count} document(s) deleted after the deadline",
            )
        ):
            await self._deleted_after_deadline(session, saga, message.count)
            return
        saga = await self._accept(
            session, message.saga_id, DOCUMENTS_DELETE, SagaStatus.RUNNING, ctx, saga
        )
        if saga is None:
            return
        await self.store.finish_step(
            session, saga.id, DOCUMENTS_DELETE, StepStatus.COMPLETED,
            f"{message.count} document(s) deleted",
        )
        await self._local_step(session, saga.id, USER_DELETE, "action")
        await self.store.delete_user(session, saga.user_id)
        await self._set_status(session, saga.id, SagaStatus.COMPLETED, final=True)
        await ctx.emit(session, UserDeleted(user_id=saga.user_id, saga_id=saga.id))

    async def on_documents_deletion_failed(
        self, session: AsyncSession, message: DocumentsDeletionFailed, ctx: MessageContext
    ) -> None:
        saga = await self._accept(
            session, message.saga_id, DOCUMENTS_DELETE, SagaStatus.RUNNING, ctx
        )
        if saga is None:
            return
        await self.store.finish_step(
            session, saga.id, DOCUMENTS_DELETE, StepStatus.FAILED, message.reason
        )
        await self.compensate(
            session, saga, f"{DOCUMENTS_DELETE} failed: {message.reason}", ctx.emit
        )

    async def on_profile_restored(
        self, session: AsyncSession, message: ProfileRestored, ctx: MessageContext
    ) -> None:
        saga = await self.store.lock(session, message.saga_id)
        if (
            saga is not None
            and saga.status == SagaStatus.COMPENSATION_FAILED
            # The operator replayed the dead letter: the compensation did complete after all.
            and await self.store.recover_step(
                session, saga.id, PROFILE_RESTORE,
                "completed after the deadline (dead letter replayed)",
            )
        ):
            await self._reactivate(session, saga, f"{saga.reason}; recovered later")
            return
        saga = await self._accept(
            session, message.saga_id, PROFILE_RESTORE, SagaStatus.COMPENSATING, ctx, saga
        )
        if saga is None:
            return
        await self.store.finish_step(session, saga.id, PROFILE_RESTORE, StepStatus.COMPLETED)
        await self._reactivate(session, saga, None)

    # --- transitions ------------------------------------------------------------------------
    async def _accept(  # noqa: PLR0917 - the reply's full identity
        self, session: AsyncSession, saga_id: uuid.UUID, step: str, status: SagaStatus,
        ctx: MessageContext, locked: SagaState | None = None,
    ) -> SagaState | None:
        """The saga, if this reply is the one it waits for; otherwise None, and the reply is
        recorded as late or duplicate."""
        saga = locked or await self.store.lock(session, saga_id)
        if saga is None:
            log.warning("saga.unknown", saga_id=str(saga_id), reply=ctx.event_type)
            return None
        pending = await self.store.step_status(session, saga_id, step)
        if saga.status == status and pending == StepStatus.PENDING:
            return saga
        await self.store.note_late_reply(session, saga_id, step)
        log.warning("saga.reply_ignored", saga_id=str(saga_id), step=step, reply=ctx.event_type)
        return None

    async def compensate(
        self, session: AsyncSession, saga: SagaState, reason: str, emit: Emit
    ) -> None:
        """Undo the completed steps in reverse: restore the profile (then reactivate, later).

        ``emit`` is the reply's context, or the sweeper's emitter for a timeout."""
        await self._set_status(session, saga.id, SagaStatus.COMPENSATING, reason=reason)
        await self.store.start_step(
            session, saga.id, PROFILE_RESTORE, kind="compensation",
            timeout_s=self.compensation_timeout_s,
            command=RestoreProfile(saga_id=saga.id, user_id=saga.user_id), emit=emit,
        )

    async def _reactivate(
        self, session: AsyncSession, saga: SagaState, reason: str | None
    ) -> None:
        await self._local_step(session, saga.id, USER_REACTIVATE, "compensation")
        await self.store.reactivate_user(session, saga.user_id)
        deleted_late = (
            await self.store.step_status(session, saga.id, DOCUMENTS_DELETE)
            == StepStatus.COMPLETED
        )
        # Documents deleted after their deadline cannot be restored: the account is back
        # without them, which is not what "compensated" promises. An operator decides.
        status = SagaStatus.COMPENSATION_FAILED if deleted_late else SagaStatus.COMPENSATED
        await self._set_status(session, saga.id, status, reason=reason, final=True)

    async def _deleted_after_deadline(
        self, session: AsyncSession, saga: SagaState, count: int
    ) -> None:
        """``documents.delete`` timed out, the saga compensated, and then the documents
        worker answered that it had deleted ``count`` documents after all (its reply was held
        up, e.g. by a broker outage). That cannot be undone: the saga ends in
        ``compensation_failed`` (alerted, shown in the console) with a reason saying so;
        a compensation still in flight finishes first and then ends there too."""
        reason = (
            f"{DOCUMENTS_DELETE} answered after its deadline: {count} document(s) were deleted "
            "while the deletion was being undone, so the account is back without them; "
            "finish the deletion or restore the documents from a backup"
        )
        log.error("saga.deleted_after_deadline", saga_id=str(saga.id), count=count)
        await self.store.note_late_reply(session, saga.id, DOCUMENTS_DELETE)
        if saga.status == SagaStatus.COMPENSATION_FAILED and saga.reason:
            reason = f"{saga.reason}; and {reason}"
        if saga.status == SagaStatus.COMPENSATING:
            await self._set_status(session, saga.id, SagaStatus.COMPENSATING, reason=reason)
            return
        await self._set_status(
            session, saga.id, SagaStatus.COMPENSATION_FAILED, reason=reason, final=True
        )

    async def _local_step(
        self, session: AsyncSession, saga_id: uuid.UUID, name: str, kind: str
    ) -> None:
        await self.store.start_step(session, saga_id, name, kind=kind)
        await self.store.finish_step(session, saga_id, name, StepStatus.COMPLETED)

    async def _set_status(
        self, session: AsyncSession, saga_id: uuid.UUID, status: SagaStatus, *,
        reason: str | None = None, final: bool = False,
    ) -> None:
        await self.store.set_status(session, saga_id, status, reason=reason, final=final)
        log.info("saga.status", saga_id=str(saga_id), status=status, reason=reason)

    # --- timeouts ---------------------------------------------------------------------------
    async def sweep(self, sessions: async_sessionmaker[AsyncSession]) -> int:
        """Fail the overdue steps of one batch of sagas; returns how many were handled.

        Safe with several sweepers: each locks its batch with ``SKIP LOCKED``, and a saga
        a handler is moving forward right now is locked too, so it is skipped. No message
        caused a timeout: each starts a chain of its own, a fresh correlation id (in the
        logs too) and no causation.
        """
        async with sessions() as session, session.begin():
            overdue = await self.store.overdue(session, SWEEP_BATCH)
            for saga in overdue:
                emitter = unprompted()
                with correlation.correlated(emitter.correlation_id):
                    await self.time_out(session, saga, emitter)
        return len(overdue)

    async def time_out(self, session: AsyncSession, saga: SagaState, emit: Emit) -> None:
        """The current step of ``saga`` missed its deadline; a compensation goes via ``emit``."""
        step = saga.current_step
        assert step is not None, "an overdue saga has a current step"
        if saga.status == SagaStatus.RUNNING:
            timeout = self.step_timeout_s
            detail = f"no reply within {timeout:g}s"
            await self.store.finish_step(session, saga.id, step, StepStatus.TIMED_OUT, detail)
            log.warning("saga.step_timed_out", saga_id=str(saga.id), step=step)
            await self.compensate(
                session, saga, f"{step} did not answer within {timeout:g}s", emit
            )
            return
        detail = f"not completed within {self.compensation_timeout_s:g}s"
        await self.store.finish_step(session, saga.id, step, StepStatus.TIMED_OUT, detail)
        reason = compensation_failed_reason()
        log.error("saga.compensation_failed", saga_id=str(saga.id), step=step, reason=reason)
        await self._set_status(
            session, saga.id, SagaStatus.COMPENSATION_FAILED, reason=reason, final=True
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


def consumer(settings: Settings) -> Consumer:
    """The ``saga`` consumer (authdb) and its timeout sweeper, on one engine."""
    engine = runtime_engine(settings, "authdb")
    orchestrator = Orchestrator.from_settings(settings.saga)
    sweeper = Sweeper(orchestrator, session_factory(engine), settings.saga.sweep_interval_s)
    return Consumer(
        consumer_spec("saga"),
        {
            UserDeletionRequested: orchestrator.on_deletion_requested,
            ProfileDeleted: orchestrator.on_profile_deleted,
            DocumentsDeleted: orchestrator.on_documents_deleted,
            DocumentsDeletionFailed: orchestrator.on_documents_deletion_failed,
            ProfileRestored: orchestrator.on_profile_restored,
        },
        engine=engine,
        background=(sweeper.run,),
    )


__all__ = ["Orchestrator", "Sweeper", "compensation_failed_reason", "consumer"]
