"""The outbox queue's contract on the in-memory fake the relay's unit tests use."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from outbox.schema import PARTITIONS
from tests.contracts.outbox_queue import AGGREGATE_TYPE, OutboxQueueContract, RowState
from tests.fakes import FakeLeases, FakeOutbox, FakeOutboxQueue


@dataclass
class FakeWorld:
    outbox: FakeOutbox
    queue: FakeOutboxQueue
    leases: FakeLeases

    async def add(self, aggregate_id: str) -> int:
        row = self.outbox.add(aggregate_id, aggregate_type=AGGREGATE_TYPE, payload='{"n": 1}')
        return row.id

    async def state(self, row_id: int) -> RowState | None:
        stored = self.outbox.rows.get(row_id)
        if stored is None:
            return None
        return RowState(stored.row.attempts, stored.last_error, stored.parked_at is not None)


class TestFakeOutboxQueue(OutboxQueueContract):
    @pytest.fixture
    async def world(self) -> FakeWorld:
        outbox = FakeOutbox()
        leases = FakeLeases(outbox)
        await leases.open(lambda: None)
        await leases.acquire_up_to(PARTITIONS)
        queue = FakeOutboxQueue(outbox, leases)
        await queue.connect()
        return FakeWorld(outbox, queue, leases)
