"""The publisher's contract (the relay's port to the broker), for any :class:`Publisher`.

A subclass provides ``world``: a publisher whose broker routes ``contract.routed`` to a
queue the test reads and nothing else, and a publisher whose broker is down.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Protocol

import pytest

from outbox.publisher import Publisher, PublisherUnavailable, RejectedByBroker
from outbox.rows import OutboxRow

ROUTED, NOWHERE = "contract.routed", "contract.nowhere"
UNCONSUMED = "profile.created"
"""An event no consumer of the product takes: published without ``mandatory``."""


class World(Protocol):
    publisher: Publisher
    down: Publisher

    async def delivered(self) -> list[str]:
        """Event ids that reached the routed queue, in order."""
        ...


def row(routing_key: str = ROUTED) -> OutboxRow:
    return OutboxRow(
        id=1, event_id=uuid.uuid4(), event_type=routing_key, routing_key=routing_key,
        aggregate_type="contract", aggregate_id=str(uuid.uuid4()), schema_version=1,
        payload='{"n": 1}', headers="{}", correlation_id="corr-contract", traceparent=None,
        tracestate=None, created_at=datetime.now(UTC), attempts=0,
    )


class PublisherContract:
    async def test_nothing_is_published_before_connecting(self, world: World) -> None:
        with pytest.raises(PublisherUnavailable):
            await world.publisher.publish([row()])

    async def test_a_batch_is_confirmed_row_by_row_in_order(self, world: World) -> None:
        await world.publisher.connect()
        rows = [row() for _ in range(5)]
        assert await world.publisher.publish(rows) == [None] * 5
        assert await world.delivered() == [str(r.event_id) for r in rows]

    async def test_an_unroutable_event_is_rejected_and_the_others_confirmed(
        self, world: World
    ) -> None:
        await world.publisher.connect()
        rows = [row(), row(NOWHERE), row()]
        outcomes = await world.publisher.publish(rows)
        assert outcomes[0] is None and outcomes[2] is None
        assert isinstance(outcomes[1], RejectedByBroker)
        assert await world.delivered() == [str(rows[0].event_id), str(rows[2].event_id)]

    async def test_an_event_no_consumer_takes_is_confirmed_without_a_queue(
        self, world: World
    ) -> None:
        await world.publisher.connect()
        assert await world.publisher.publish([row(UNCONSUMED)]) == [None]

    async def test_a_broker_that_is_down_is_unavailable_not_an_error(self, world: World) -> None:
        with pytest.raises(PublisherUnavailable):
            await world.down.connect()
        with pytest.raises(PublisherUnavailable):
            await world.down.publish([row()])
