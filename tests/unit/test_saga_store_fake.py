"""The saga store's contract on the in-memory fake the saga unit tests use."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import cast

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from apps.auth.models import UserStatus
from apps.auth.sagas import SagaState
from shared.messaging import H_CAUSATION_ID
from tests.contracts.saga_store import SagaStoreContract
from tests.fakes import FakeSagaStore, NullSession


@dataclass
class FakeWorld:
    store: FakeSagaStore = field(default_factory=FakeSagaStore)
    session: AsyncSession = field(default_factory=lambda: cast(AsyncSession, NullSession()))

    async def add(self, user_status: UserStatus = UserStatus.DELETING) -> SagaState:
        return self.store.add(user_status)

    async def user_status(self, user_id: uuid.UUID) -> str:
        return self.store.users[user_id]

    async def late_replies(self, saga_id: uuid.UUID, step: str) -> int:
        return self.store.steps[(saga_id, step)].late_replies

    async def commands(self) -> list[str]:
        return [command.event_type for command, _ in self.store.commands]

    async def sent(self) -> list[tuple[str, str | None, str | None]]:
        rows = cast(NullSession, self.session).executed
        return [
            (r["event_type"], r["correlation_id"], json.loads(r["headers"]).get(H_CAUSATION_ID))
            for r in rows
        ]


class TestFakeSagaStore(SagaStoreContract):
    @pytest.fixture
    def world(self) -> FakeWorld:
        return FakeWorld()
