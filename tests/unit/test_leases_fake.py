"""The partition leases' contract on the in-memory fake the relay's unit tests use."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from outbox.leases import PartitionLeases
from tests.contracts.leases import LeasesContract
from tests.fakes import FakeLeases, FakeOutbox


@dataclass
class FakeWorld:
    outbox: FakeOutbox = field(default_factory=FakeOutbox)

    async def leases(self) -> PartitionLeases:
        return FakeLeases(self.outbox)

    async def commit(self) -> None:
        self.outbox.add()

    async def drop(self, leases: PartitionLeases) -> None:
        assert isinstance(leases, FakeLeases)
        self.outbox.drop(leases)


class TestFakeLeases(LeasesContract):
    @pytest.fixture
    def world(self) -> FakeWorld:
        return FakeWorld()
