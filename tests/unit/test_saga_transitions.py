"""The deletion saga's transitions on the fake store: every rule of the state machine,
without PostgreSQL or RabbitMQ."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from apps.auth.models import SagaStatus, StepStatus, UserStatus
from apps.auth.sagas import DOCUMENTS_DELETE, PROFILE_DELETE, PROFILE_RESTORE, SagaState
from outbox.writer import Emitter
from shared.events import (
    DeleteDocuments,
    DocumentsDeleted,
    DocumentsDeletionFailed,
    ProfileDeleted,
    ProfileRestored,
    RestoreProfile,
    UserDeleted,
    UserDeletionRequested,
)
from tests.fakes import FakeSagaStore, NullSession, RecordingContext
from workers.saga import Orchestrator, compensation_failed_reason

SESSION = cast(AsyncSession, NullSession())


def orchestrator(store: FakeSagaStore, **timeouts: float) -> Orchestrator:
    return Orchestrator(
        store, step_timeout_s=timeouts.get("step", 30),
        compensation_timeout_s=timeouts.get("compensation", 300),
    )


async def started(store: FakeSagaStore, o: Orchestrator) -> SagaState:
    """A saga as the API leaves it: running, ``profile.delete`` sent."""
    saga = store.add()
    ctx = RecordingContext(UserDeletionRequested.event_type)
    await o.on_deletion_requested(
        SESSION, UserDeletionRequested(user_id=saga.user_id, saga_id=saga.id), ctx
    )
    return saga


async def reply(o: Orchestrator, message: Any) -> RecordingContext:
    ctx = RecordingContext(message.event_type)
    handler = {
        ProfileDeleted: o.on_profile_deleted,
        DocumentsDeleted: o.on_documents_deleted,
        DocumentsDeletionFailed: o.on_documents_deletion_failed,
        ProfileRestored: o.on_profile_restored,
    }[type(message)]
    await handler(SESSION, message, ctx)
    return ctx


async def test_the_happy_path_deletes_the_user_and_announces_it() -> None:
    store = FakeSagaStore()
    o = orchestrator(store)
    saga = await started(store, o)
    assert store.steps[(saga.id, PROFILE_DELETE)].status == StepStatus.PENDING

    ctx = await reply(o, ProfileDeleted(saga_id=saga.id, user_id=saga.user_id))
    assert store.steps[(saga.id, PROFILE_DELETE)].status == StepStatus.COMPLETED
    command, _ = store.commands[-1]
    assert isinstance(command, DeleteDocuments)
    assert (command.saga_id, command.user_id) == (saga.id, saga.user_id)
    assert command.deadline is not None
    assert ctx.emitted == [command]  # through the reply's context: its correlation, its id

    ctx = await reply(o, DocumentsDeleted(saga_id=saga.id, user_id=saga.user_id, count=2))
    assert store.steps[(saga.id, DOCUMENTS_DELETE)].detail == "2 document(s) deleted"
    assert store.users[saga.user_id] == UserStatus.DELETED
    assert store.sagas[saga.id].status == SagaStatus.COMPLETED
    assert store.sagas[saga.id].current_step is None
    assert ctx.emitted == [UserDeleted(user_id=saga.user_id, saga_id=saga.id)]


async def test_a_refused_deletion_compensates_and_reactivates_the_user() -> None:
    store = FakeSagaStore()
    o = orchestrator(store)
    saga = await started(store, o)
    await reply(o, ProfileDeleted(saga_id=saga.id, user_id=saga.user_id))
    await reply(
        o, DocumentsDeletionFailed(saga_id=saga.id, user_id=saga.user_id, reason="legal hold")
    )
    assert store.sagas[saga.id].status == SagaStatus.COMPENSATING
    assert isinstance(store.commands[-1][0], RestoreProfile)
    assert store.steps[(saga.id, PROFILE_RESTORE)].kind == "compensation"

    await reply(o, ProfileRestored(saga_id=saga.id, user_id=saga.user_id))
    final = store.sagas[saga.id]
    assert (final.status, final.reason) == (
        SagaStatus.COMPENSATED, "documents.delete failed: legal hold"
    )
    assert store.users[saga.user_id] == UserStatus.ACTIVE


async def test_a_duplicate_or_early_reply_changes_nothing_but_the_late_count() -> None:
    store = FakeSagaStore()
    o = orchestrator(store)
    saga = await started(store, o)
    await reply(o, ProfileDeleted(saga_id=saga.id, user_id=saga.user_id))
    before = (store.sagas[saga.id], len(store.commands))
    await reply(o, ProfileDeleted(saga_id=saga.id, user_id=saga.user_id))  # duplicate
    await reply(o, ProfileRestored(saga_id=saga.id, user_id=saga.user_id))  # never asked for
    assert (store.sagas[saga.id], len(store.commands)) == before
    assert store.steps[(saga.id, PROFILE_DELETE)].late_replies == 1


async def test_a_reply_for_an_unknown_saga_is_ignored() -> None:
    store = FakeSagaStore()
    other = FakeSagaStore().add()
    await reply(orchestrator(store), ProfileDeleted(saga_id=other.id, user_id=other.user_id))
    assert store.sagas == {} and store.commands == []


async def test_a_saga_the_api_did_not_start_gets_its_first_step() -> None:
    store = FakeSagaStore()
    saga = await started(store, orchestrator(store))
    assert store.sagas[saga.id].current_step == PROFILE_DELETE
    assert len(store.commands) == 1
    again = RecordingContext(UserDeletionRequested.event_type)  # redelivered: nothing new
    await orchestrator(store).on_deletion_requested(
        SESSION, UserDeletionRequested(user_id=saga.user_id, saga_id=saga.id), again
    )
    assert len(store.commands) == 1


async def test_an_overdue_step_times_out_and_compensation_starts() -> None:
    store = FakeSagaStore()
    o = orchestrator(store, step=-1)  # every step is overdue at once
    saga = await started(store, o)
    sessions = cast(async_sessionmaker[AsyncSession], NullSession)
    assert await o.sweep(sessions) == 1
    assert store.steps[(saga.id, PROFILE_DELETE)].status == StepStatus.TIMED_OUT
    assert store.sagas[saga.id].status == SagaStatus.COMPENSATING
    assert store.sagas[saga.id].reason == "profile.delete did not answer within -1s"
    assert store.steps[(saga.id, PROFILE_RESTORE)].status == StepStatus.PENDING


async def test_a_compensation_the_sweeper_sends_starts_a_correlation_of_its_own() -> None:
    """No message caused a timeout: the sweeper's command has a fresh correlation id per
    saga and no causation, while a reply's command goes through the reply's context."""
    store = FakeSagaStore()
    o = orchestrator(store, step=-1)
    first, second = await started(store, o), await started(store, o)
    sessions = cast(async_sessionmaker[AsyncSession], NullSession)
    assert await o.sweep(sessions) == 2
    sent = {c.saga_id: emit for c, emit in store.commands if isinstance(c, RestoreProfile)}
    emitters = [sent[first.id], sent[second.id]]
    assert all(isinstance(e, Emitter) and e.causation_id is None for e in emitters)
    ids = {cast(Emitter, e).correlation_id for e in emitters}
    assert len(ids) == 2 and None not in ids


async def test_an_overdue_compensation_fails_the_saga_and_a_late_restore_recovers_it() -> None:
    store = FakeSagaStore()
    o = orchestrator(store, step=-1, compensation=-1)
    saga = await started(store, o)
    sessions = cast(async_sessionmaker[AsyncSession], NullSession)
    await o.sweep(sessions)  # profile.delete timed out: compensating
    await o.sweep(sessions)  # profile.restore timed out: compensation failed
    failed = store.sagas[saga.id]
    assert (failed.status, failed.reason) == (
        SagaStatus.COMPENSATION_FAILED, compensation_failed_reason()
    )
    assert "profiles.dlq" in compensation_failed_reason()
    assert await o.sweep(sessions) == 0  # final: not overdue any more

    await reply(o, ProfileRestored(saga_id=saga.id, user_id=saga.user_id))  # dead letter replayed
    recovered = store.sagas[saga.id]
    assert recovered.status == SagaStatus.COMPENSATED
    assert recovered.reason == f"{compensation_failed_reason()}; recovered later"
    assert store.users[saga.user_id] == UserStatus.ACTIVE


async def _timed_out_at_documents(store: FakeSagaStore, o: Orchestrator) -> SagaState:
    """A saga whose ``documents.delete`` missed its deadline (``o``'s steps are overdue at
    once): compensating."""
    saga = await started(store, o)
    await reply(o, ProfileDeleted(saga_id=saga.id, user_id=saga.user_id))
    assert await o.sweep(cast(async_sessionmaker[AsyncSession], NullSession)) == 1
    assert store.steps[(saga.id, DOCUMENTS_DELETE)].status == StepStatus.TIMED_OUT
    assert store.sagas[saga.id].status == SagaStatus.COMPENSATING
    return saga


async def test_documents_deleted_after_the_deadline_end_the_saga_in_compensation_failed(
) -> None:
    """The reply was held up after the documents worker acted: the compensation cannot bring
    the documents back, so the saga must not claim it did."""
    store = FakeSagaStore()
    o = orchestrator(store, step=-1)
    saga = await _timed_out_at_documents(store, o)

    await reply(o, DocumentsDeleted(saga_id=saga.id, user_id=saga.user_id, count=3))
    late = store.sagas[saga.id]
    assert late.status == SagaStatus.COMPENSATING  # the restore in flight finishes first
    assert late.reason is not None and "3 document(s) were deleted" in late.reason
    assert store.steps[(saga.id, DOCUMENTS_DELETE)].status == StepStatus.COMPLETED

    await reply(o, ProfileRestored(saga_id=saga.id, user_id=saga.user_id))
    final = store.sagas[saga.id]
    assert final.status == SagaStatus.COMPENSATION_FAILED
    assert final.reason == late.reason
    assert store.users[saga.user_id] == UserStatus.ACTIVE  # the account is back, flagged


async def test_documents_deleted_after_a_finished_compensation_flag_it() -> None:
    store = FakeSagaStore()
    o = orchestrator(store, step=-1)
    saga = await _timed_out_at_documents(store, o)
    await reply(o, ProfileRestored(saga_id=saga.id, user_id=saga.user_id))
    assert store.sagas[saga.id].status == SagaStatus.COMPENSATED

    await reply(o, DocumentsDeleted(saga_id=saga.id, user_id=saga.user_id, count=1))
    final = store.sagas[saga.id]
    assert final.status == SagaStatus.COMPENSATION_FAILED
    assert final.reason is not None and "1 document(s) were deleted" in final.reason


async def test_a_late_reply_that_deleted_nothing_changes_nothing() -> None:
    store = FakeSagaStore()
    o = orchestrator(store, step=-1)
    saga = await _timed_out_at_documents(store, o)
    await reply(o, ProfileRestored(saga_id=saga.id, user_id=saga.user_id))

    await reply(o, DocumentsDeleted(saga_id=saga.id, user_id=saga.user_id, count=0))
    assert store.sagas[saga.id].status == SagaStatus.COMPENSATED
    assert store.steps[(saga.id, DOCUMENTS_DELETE)].status == StepStatus.TIMED_OUT
    assert store.steps[(saga.id, DOCUMENTS_DELETE)].late_replies == 1
