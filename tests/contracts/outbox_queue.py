"""The outbox queue's contract (what the relay relies on), for any :class:`OutboxQueue`.

A subclass provides ``world``: a connected queue on an empty outbox, its leases open and
owning every partition, a way to commit an event of an aggregate, and a look at a row.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import NamedTuple, Protocol

import pytest

from outbox.leases import PartitionLeases
from outbox.schema import PARTITIONS
from outbox.store import Failure, OutboxQueue, OutboxStatus
from outbox.writer import aggregate_partition

AGGREGATE_TYPE = "contract"
ALL = list(range(PARTITIONS))


class RowState(NamedTuple):
    attempts: int
    last_error: str | None
    parked: bool


class World(Protocol):
    queue: OutboxQueue
    leases: PartitionLeases

    async def add(self, aggregate_id: str) -> int:
        """Commit an event of ``aggregate_id`` (type :data:`AGGREGATE_TYPE`, payload
        ``{"n": 1}``); its row id."""
        ...

    async def state(self, row_id: int) -> RowState | None:
        """The row's failure columns; None once it is deleted."""
        ...


def apart(n: int) -> list[str]:
    """``n`` aggregate ids, each in a partition of its own."""
    found: dict[int, str] = {}
    index = 0
    while len(found) < n:
        found.setdefault(partition(f"agg-{index}"), f"agg-{index}")
        index += 1
    return list(found.values())


def partition(aggregate_id: str) -> int:
    return aggregate_partition(AGGREGATE_TYPE, aggregate_id)


async def claimed(
    queue: OutboxQueue,
    partitions: Sequence[int] = ALL,
    in_flight: Sequence[int] = (),
    limit: int = 10,
    delete: Sequence[int] = (),
    busy: Sequence[str] = (),
) -> list[int]:
    """The ids of the rows a claim returns (``busy``: aggregate ids of the contract's type)."""
    held = [(AGGREGATE_TYPE, aggregate_id) for aggregate_id in busy]
    rows = await queue.claim(partitions, in_flight, limit, delete=delete, busy=held)
    return [row.id for row in rows]


class OutboxQueueContract:
    async def test_a_claim_returns_unsent_rows_in_id_order_up_to_the_limit(
        self, world: World
    ) -> None:
        a, b = apart(2)
        added = [await world.add(a), await world.add(b), await world.add(a)]
        rows = await world.queue.claim(ALL, [], 10)
        assert [row.id for row in rows] == added
        first = rows[0]
        assert (first.aggregate_type, first.aggregate_id, first.attempts) == (AGGREGATE_TYPE, a, 0)
        assert json.loads(first.payload) == {"n": 1}
        assert await claimed(world.queue, limit=2) == added[:2]

    async def test_a_claim_takes_only_the_given_partitions_and_skips_rows_in_flight(
        self, world: World
    ) -> None:
        a, b = apart(2)
        a1, b1, a2 = await world.add(a), await world.add(b), await world.add(a)
        assert await claimed(world.queue, [partition(a)]) == [a1, a2]
        assert await claimed(world.queue, in_flight=[a1]) == [b1, a2]
        assert await claimed(world.queue, []) == []

    async def test_a_claim_skips_every_row_of_the_busy_aggregates(self, world: World) -> None:
        a, b, c = apart(3)
        a1, b1, a2, c1, b2 = [await world.add(x) for x in (a, b, a, c, b)]
        assert await claimed(world.queue, in_flight=[a1], busy=[a]) == [b1, c1, b2]
        assert await claimed(world.queue, busy=[a, b]) == [c1]
        assert await claimed(world.queue, busy=["not-" + a]) == [a1, b1, a2, c1, b2]
        assert await claimed(world.queue, limit=2, busy=[a]) == [b1, c1]

    async def test_a_claim_deletes_the_confirmed_rows_it_is_given(self, world: World) -> None:
        [a] = apart(1)
        a1, a2, a3 = [await world.add(a) for _ in range(3)]
        assert await claimed(world.queue, in_flight=[a1], delete=[a1]) == [a2, a3]
        assert await world.state(a1) is None
        assert await world.state(a2) == RowState(0, None, False)

    async def test_sent_rows_are_deleted(self, world: World) -> None:
        [a] = apart(1)
        a1, a2 = await world.add(a), await world.add(a)
        await world.queue.delete_sent([a1])
        assert await world.state(a1) is None
        assert await claimed(world.queue) == [a2]

    async def test_a_failed_row_waits_for_its_delay_and_holds_its_aggregate_back(
        self, world: World
    ) -> None:
        a, b = apart(2)
        a1, _, b1 = await world.add(a), await world.add(a), await world.add(b)
        await world.queue.record_failures([Failure(a1, "nacked", 60.0)], 5)
        assert await world.state(a1) == RowState(1, "nacked", False)
        assert await claimed(world.queue) == [b1], "a1 waits 60 s, a2 waits behind it"
        status = await world.queue.status()
        assert (status.backlog, status.parked, status.retrying) == (3, 0, 1)

    async def test_a_failed_row_due_again_is_claimed_and_its_aggregate_still_waits(
        self, world: World
    ) -> None:
        a, b = apart(2)
        a1, a2, b1 = await world.add(a), await world.add(a), await world.add(b)
        await world.queue.record_failures([Failure(a1, "nacked", 0.0)], 5)
        assert await claimed(world.queue) == [a1, b1]
        await world.queue.record_failures([Failure(a1, "nacked again", 0.0)], 5)
        assert await world.state(a1) == RowState(2, "nacked again", False)
        await world.queue.delete_sent([a1])
        assert await claimed(world.queue) == [a2, b1], "confirmed at last: a2 follows"

    async def test_a_row_is_parked_at_max_attempts_and_holds_its_aggregate_no_longer(
        self, world: World
    ) -> None:
        [a] = apart(1)
        a1, a2 = await world.add(a), await world.add(a)
        await world.queue.record_failures([Failure(a1, "unroutable", 0.0)], 1)
        assert await world.state(a1) == RowState(1, "unroutable", True)
        assert await claimed(world.queue) == [a2]
        status = await world.queue.status()
        assert (status.backlog, status.parked, status.retrying) == (1, 1, 0)

    async def test_an_error_is_kept_to_2000_characters(self, world: World) -> None:
        [a] = apart(1)
        a1 = await world.add(a)
        await world.queue.record_failures([Failure(a1, "x" * 5000, 60.0)], 5)
        state = await world.state(a1)
        assert state is not None and state.last_error == "x" * 2000

    async def test_the_status_counts_the_backlog_and_its_age(self, world: World) -> None:
        assert await world.queue.status() == OutboxStatus(0, 0, 0, None)
        [a] = apart(1)
        await world.add(a)
        status = await world.queue.status()
        assert (status.backlog, status.parked, status.retrying) == (1, 0, 0)
        assert status.oldest_age_s is not None and 0 <= status.oldest_age_s < 60

    async def test_without_its_leases_the_queue_claims_nothing(self, world: World) -> None:
        [a] = apart(1)
        await world.add(a)
        await world.leases.close()
        with pytest.raises(ConnectionError):
            await world.queue.claim(ALL, [], 10)

    async def test_a_closed_queue_writes_nothing(self, world: World) -> None:
        [a] = apart(1)
        a1 = await world.add(a)
        await world.queue.close()
        with pytest.raises(ConnectionError):
            await world.queue.delete_sent([a1])
        with pytest.raises(ConnectionError):
            await world.queue.record_failures([Failure(a1, "nacked", 0.0)], 5)
        with pytest.raises(ConnectionError):
            await world.queue.status()
        await world.queue.connect()
        assert await world.state(a1) == RowState(0, None, False)

    async def test_a_vacuum_keeps_the_rows(self, world: World) -> None:
        [a] = apart(1)
        a1, a2 = await world.add(a), await world.add(a)
        await world.queue.delete_sent([a1])
        await world.queue.vacuum()
        assert await claimed(world.queue) == [a2]
