"""The saga store's contract: what the orchestrator relies on, for any :class:`SagaStore`.

A subclass provides the ``world`` fixture: a store, the session its calls take, and a way
to add a running saga (its user ``deleting``) and to look at what the store holds. Commands
go out through :data:`EMIT`, which sets their correlation and causation.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Protocol

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from apps.auth.models import SagaStatus, StepStatus, UserStatus
from apps.auth.sagas import DOCUMENTS_DELETE, PROFILE_DELETE, USER_DELETE, SagaState, SagaStore
from outbox.writer import Emitter
from shared.events import DeleteProfile

EMIT = Emitter("corr-contract", "cause-contract")


class World(Protocol):
    store: SagaStore
    session: AsyncSession

    async def add(self, user_status: UserStatus = UserStatus.DELETING) -> SagaState: ...

    async def user_status(self, user_id: uuid.UUID) -> str: ...

    async def late_replies(self, saga_id: uuid.UUID, step: str) -> int: ...

    async def commands(self) -> list[str]:
        """Event types of the commands written, in order."""
        ...

    async def sent(self) -> list[tuple[str, str | None, str | None]]:
        """(event type, correlation id, causation id) of the outbox rows written, in order."""
        ...


class SagaStoreContract:
    async def test_lock_finds_a_saga_and_not_an_unknown_one(self, world: World) -> None:
        saga = await world.add()
        found = await world.store.lock(world.session, saga.id)
        assert found == SagaState(saga.id, saga.user_id, SagaStatus.RUNNING, None, None)
        assert await world.store.lock(world.session, uuid.uuid4()) is None

    async def test_a_started_step_is_pending_and_current_and_sends_its_command(
        self, world: World
    ) -> None:
        saga = await world.add()
        deadline = await world.store.start_step(
            world.session, saga.id, PROFILE_DELETE, timeout_s=30,
            command=DeleteProfile(saga_id=saga.id, user_id=saga.user_id), emit=EMIT,
        )
        assert isinstance(deadline, datetime)
        assert await world.store.step_status(world.session, saga.id, PROFILE_DELETE) == (
            StepStatus.PENDING
        )
        found = await world.store.lock(world.session, saga.id)
        assert found is not None and found.current_step == PROFILE_DELETE
        assert await world.commands() == [DeleteProfile.event_type]
        assert await world.sent() == [("profile.delete", "corr-contract", "cause-contract")]

    async def test_a_command_without_an_emit_is_refused(self, world: World) -> None:
        saga = await world.add()
        command = DeleteProfile(saga_id=saga.id, user_id=saga.user_id)
        with pytest.raises(TypeError, match="needs an emit"):
            await world.store.start_step(world.session, saga.id, PROFILE_DELETE, command=command)
        assert await world.commands() == []

    async def test_a_local_step_has_no_deadline_and_no_command(self, world: World) -> None:
        saga = await world.add()
        assert await world.store.start_step(world.session, saga.id, USER_DELETE) is None
        assert await world.commands() == []
        assert await world.store.step_status(world.session, saga.id, DOCUMENTS_DELETE) is None

    async def test_a_step_finishes_once(self, world: World) -> None:
        saga = await world.add()
        await world.store.start_step(world.session, saga.id, PROFILE_DELETE, timeout_s=30)
        finish = world.store.finish_step
        assert await finish(world.session, saga.id, PROFILE_DELETE, StepStatus.COMPLETED)
        assert not await finish(world.session, saga.id, PROFILE_DELETE, StepStatus.FAILED)
        assert await world.store.step_status(world.session, saga.id, PROFILE_DELETE) == (
            StepStatus.COMPLETED
        )
        assert not await finish(world.session, saga.id, DOCUMENTS_DELETE, StepStatus.COMPLETED)

    async def test_only_a_timed_out_step_recovers(self, world: World) -> None:
        saga = await world.add()
        store, session = world.store, world.session
        await store.start_step(session, saga.id, PROFILE_DELETE, timeout_s=30)
        assert not await store.recover_step(session, saga.id, PROFILE_DELETE, "late")
        await store.finish_step(session, saga.id, PROFILE_DELETE, StepStatus.TIMED_OUT)
        assert await store.recover_step(session, saga.id, PROFILE_DELETE, "late")
        assert await store.step_status(session, saga.id, PROFILE_DELETE) == StepStatus.COMPLETED

    async def test_late_replies_are_counted(self, world: World) -> None:
        saga = await world.add()
        await world.store.start_step(world.session, saga.id, PROFILE_DELETE, timeout_s=30)
        for _ in range(2):
            await world.store.note_late_reply(world.session, saga.id, PROFILE_DELETE)
        assert await world.late_replies(saga.id, PROFILE_DELETE) == 2

    async def test_a_final_status_clears_the_current_step_and_keeps_the_reason(
        self, world: World
    ) -> None:
        saga = await world.add()
        store, session = world.store, world.session
        await store.start_step(session, saga.id, PROFILE_DELETE, timeout_s=30)
        await store.set_status(session, saga.id, SagaStatus.COMPENSATING, reason="why")
        await store.set_status(session, saga.id, SagaStatus.COMPENSATED, final=True)
        assert await store.lock(session, saga.id) == SagaState(
            saga.id, saga.user_id, SagaStatus.COMPENSATED, None, "why"
        )

    async def test_overdue_sagas_in_flight_oldest_first(self, world: World) -> None:
        store, session = world.store, world.session
        older, newer, finished, waiting = [await world.add() for _ in range(4)]
        await store.start_step(session, older.id, PROFILE_DELETE, timeout_s=-120)
        await store.start_step(session, newer.id, PROFILE_DELETE, timeout_s=-60)
        await store.start_step(session, finished.id, PROFILE_DELETE, timeout_s=-90)
        await store.set_status(session, finished.id, SagaStatus.COMPLETED)
        await store.start_step(session, waiting.id, PROFILE_DELETE, timeout_s=60)
        mine = {older.id, newer.id, finished.id, waiting.id}
        overdue = [s.id for s in await store.overdue(session, 100) if s.id in mine]
        assert overdue == [older.id, newer.id]

    async def test_the_user_is_deleted_or_reactivated_only_while_deleting(
        self, world: World
    ) -> None:
        deleting, active = await world.add(), await world.add(UserStatus.ACTIVE)
        await world.store.delete_user(world.session, deleting.user_id)
        await world.store.delete_user(world.session, active.user_id)
        assert await world.user_status(deleting.user_id) == UserStatus.DELETED
        assert await world.user_status(active.user_id) == UserStatus.ACTIVE
        await world.store.reactivate_user(world.session, deleting.user_id)
        assert await world.user_status(deleting.user_id) == UserStatus.DELETED
        restored = await world.add()
        await world.store.reactivate_user(world.session, restored.user_id)
        assert await world.user_status(restored.user_id) == UserStatus.ACTIVE
