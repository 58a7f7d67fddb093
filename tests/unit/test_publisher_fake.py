"""The publisher's contract on :class:`tests.fakes.FakePublisher`."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from tests.contracts.publisher import NOWHERE, ROUTED, PublisherContract
from tests.fakes import FakePublisher


def _fake(*, down: bool = False) -> FakePublisher:
    fake = FakePublisher(unroutable=[NOWHERE])
    fake.down = down
    return fake


@dataclass
class FakeWorld:
    publisher: FakePublisher = field(default_factory=_fake)
    down: FakePublisher = field(default_factory=lambda: _fake(down=True))

    async def delivered(self) -> list[str]:
        return [str(r.event_id) for r in self.publisher.published if r.routing_key == ROUTED]


class TestFakePublisher(PublisherContract):
    @pytest.fixture
    def world(self) -> FakeWorld:
        return FakeWorld()
