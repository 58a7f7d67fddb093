"""The dead-letter store's contract on the in-memory fake."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.contracts.dead_letters import DeadLetterStoreContract, headers
from tests.fakes import FakeDeadLetterStore


@dataclass
class FakeWorld:
    store: FakeDeadLetterStore = field(default_factory=FakeDeadLetterStore)
    work: str = "profiles"

    async def add(self, message_id: str, error_type: str, failed_queue: str = "") -> None:
        letter = headers(error_type, failed_queue or self.work)
        self.store.add(self.work + ".dlq", message_id, letter)

    async def remaining(self) -> list[str]:
        return [dl.message_id for dl in self.store.queues.get(self.work + ".dlq", [])]

    async def arrived(self) -> list[tuple[str, dict[str, Any]]]:
        return self.store.delivered.get(self.work, [])


class TestFakeDeadLetterStore(DeadLetterStoreContract):
    @pytest.fixture
    def world(self) -> FakeWorld:
        return FakeWorld()
