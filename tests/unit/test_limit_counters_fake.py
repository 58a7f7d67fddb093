"""The rate-limit counters' contract on the in-memory fake."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from tests.contracts.limit_counters import LimitCountersContract
from tests.fakes import FakeClock, MemoryLimitCounters


@dataclass
class MemoryWorld:
    clock: FakeClock = field(default_factory=FakeClock)

    def __post_init__(self) -> None:
        self.counters = MemoryLimitCounters(self.clock)


class TestMemoryLimitCounters(LimitCountersContract):
    @pytest.fixture
    def world(self) -> MemoryWorld:
        return MemoryWorld()
