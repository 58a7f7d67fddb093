"""The dead-letter store's contract (what ``amsctl dlq`` and the console rely on), for any
:class:`amsctl.dlq.broker.DeadLetterStore`.

A subclass provides ``world``: the store, a dead-letter queue ``<work>.dlq`` of its own
with a way to add dead letters to it, and a look at what reached the work queue.
"""

from __future__ import annotations

from typing import Any, Protocol

from amsctl.dlq.broker import DeadLetterStore, MovePlan, Outcome
from amsctl.dlq.model import DeadLetter
from shared import messaging as m

STAMP = {"by": "contract", "op": "op-1"}


class World(Protocol):
    store: DeadLetterStore
    work: str
    """A work queue of the product's topology (one partition); its dead-letter queue is
    ``work + ".dlq"``."""

    async def add(self, message_id: str, error_type: str, failed_queue: str = "") -> None: ...

    async def remaining(self) -> list[str]:
        """Message ids left in the dead-letter queue, in order."""
        ...

    async def arrived(self) -> list[tuple[str, dict[str, Any]]]:
        """(message id, headers) of what the work queue received, in order."""
        ...


def headers(error_type: str, failed_queue: str) -> dict[str, Any]:
    return {
        m.H_ERROR_TYPE: error_type, m.H_ERROR_MESSAGE: "boom", m.H_ATTEMPTS: 5,
        m.H_FAILED_QUEUE: failed_queue, m.H_FAILED_ROUTING_KEY: "user.registered",
    }


def by_type(error_type: str) -> Any:
    def select(letter: DeadLetter) -> bool:
        return letter.error_type == error_type

    return select


async def _move(world: World, plan: MovePlan) -> tuple[list[Outcome], list[int]]:
    windows: list[int] = []
    outcomes = await world.store.move(world.work + ".dlq", plan, lambda w: windows.append(len(w)))
    return outcomes, windows


class DeadLetterStoreContract:
    async def test_browsing_reads_in_order_and_takes_nothing(self, world: World) -> None:
        for n in range(3):
            await world.add(f"m{n}", "shared.errors.DomainError")
        first = await world.store.browse(world.work + ".dlq", limit=2)
        assert [(dl.message_id, dl.position) for dl in first] == [("m0", 0), ("m1", 1)]
        assert first[0].failed_queue == world.work and first[0].attempts == 5
        assert await world.remaining() == ["m0", "m1", "m2"]
        assert world.work + ".dlq" in [q.name for q in world.store.dead_letter_queues()]

    async def test_a_replay_moves_the_selected_letters_to_their_queue_with_a_stamp(
        self, world: World
    ) -> None:
        for n, error in enumerate(["A", "B", "A", "B"]):
            await world.add(f"m{n}", error)
        outcomes, windows = await _move(world, MovePlan(by_type("A"), STAMP, window=1))
        assert [(o.message_id, o.ok, o.target) for o in outcomes] == [
            ("m0", True, world.work), ("m2", True, world.work)
        ]
        assert windows == [1, 1]
        assert await world.remaining() == ["m1", "m3"]
        arrived = await world.arrived()
        assert [message_id for message_id, _ in arrived] == ["m0", "m2"]
        replayed = arrived[0][1]
        assert replayed[m.H_ATTEMPTS] == 0 and replayed[m.H_REPLAYS] == [STAMP]

    async def test_a_purge_removes_at_most_max_count_and_delivers_nothing(
        self, world: World
    ) -> None:
        for n in range(3):
            await world.add(f"m{n}", "A")
        outcomes, _ = await _move(world, MovePlan(by_type("A"), None, max_count=2))
        assert [(o.message_id, o.ok, o.target) for o in outcomes] == [
            ("m0", True, None), ("m1", True, None)
        ]
        assert await world.remaining() == ["m2"]
        assert await world.arrived() == []

    async def test_a_letter_whose_queue_is_a_dead_letter_queue_is_not_replayed(
        self, world: World
    ) -> None:
        await world.add("loop", "A", failed_queue=world.work + ".dlq")
        await world.add("fine", "A")
        outcomes, _ = await _move(world, MovePlan(by_type("A"), STAMP))
        assert [(o.message_id, o.ok) for o in outcomes] == [("loop", False), ("fine", True)]
        assert "dead-letter queue" in str(outcomes[0].error)
        assert await world.remaining() == ["loop"]

    async def test_a_letter_whose_queue_is_outside_the_topology_is_not_replayed(
        self, world: World
    ) -> None:
        """``x-ams-failed-queue`` is the message's word: a partition that is not deployed
        (one partition here) names no queue of the topology."""
        await world.add("stray", "A", failed_queue=world.work + ".p9")
        await world.add("fine", "A")
        outcomes, _ = await _move(world, MovePlan(by_type("A"), STAMP))
        assert [(o.message_id, o.ok) for o in outcomes] == [("stray", False), ("fine", True)]
        assert "not a work queue of the topology" in str(outcomes[0].error)
        assert await world.remaining() == ["stray"]
        assert [message_id for message_id, _ in await world.arrived()] == ["fine"]
