"""The partition leases' contract (how relay copies share an outbox), for any
:class:`PartitionLeases`.

A subclass provides ``world``: new relays' leases on one database, a commit to that
database's outbox, and a way to break a lease's connection.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import pytest

from outbox.leases import PartitionLeases
from outbox.schema import PARTITIONS

ALL = set(range(PARTITIONS))


class World(Protocol):
    async def leases(self) -> PartitionLeases:
        """A new relay's leases, not open yet (closed after the test)."""
        ...

    async def commit(self) -> None:
        """Commit an outbox row."""
        ...

    async def drop(self, leases: PartitionLeases) -> None:
        """Break the connection of ``leases`` (its locks go with it; it is not told)."""
        ...


def _ignore() -> None:
    return None


async def opened(world: World) -> PartitionLeases:
    leases = await world.leases()
    await leases.open(_ignore)
    return leases


class LeasesContract:
    async def test_a_relay_alone_owns_nothing_at_first_and_its_share_is_everything(
        self, world: World
    ) -> None:
        leases = await world.leases()
        before = leases.alive
        await leases.open(_ignore)
        assert (before, leases.alive) == (False, True)
        assert leases.owned == set()
        assert await leases.share() == PARTITIONS
        await leases.acquire_up_to(PARTITIONS)
        assert leases.owned == ALL

    async def test_relays_take_only_free_partitions_and_share_them_evenly(
        self, world: World
    ) -> None:
        one = await opened(world)
        await one.acquire_up_to(12)
        two = await opened(world)
        assert await one.share() == await two.share() == PARTITIONS // 2
        await two.acquire_up_to(PARTITIONS // 2)
        assert len(one.owned) == 12 and two.owned == ALL - one.owned
        await one.release_down_to(PARTITIONS // 2)
        assert len(one.owned) == PARTITIONS // 2
        await two.acquire_up_to(PARTITIONS // 2)
        assert len(two.owned) == PARTITIONS // 2 and one.owned | two.owned == ALL

    async def test_closing_frees_every_partition(self, world: World) -> None:
        one = await opened(world)
        await one.acquire_up_to(PARTITIONS)
        two = await opened(world)
        await one.close()
        assert not one.alive and one.owned == set()
        assert await two.share() == PARTITIONS
        await two.acquire_up_to(PARTITIONS)
        assert two.owned == ALL

    async def test_a_commit_notifies_every_open_relay(self, world: World) -> None:
        events = [asyncio.Event(), asyncio.Event()]
        for event in events:
            leases = await world.leases()
            await leases.open(event.set)
        await world.commit()
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events)), 5)

    async def test_a_broken_connection_frees_its_partitions_and_lost_forgets_them(
        self, world: World
    ) -> None:
        one = await opened(world)
        await one.acquire_up_to(PARTITIONS)
        two = await opened(world)
        await world.drop(one)
        async with asyncio.timeout(5):  # the server ends the dropped session on its own time
            while two.owned != ALL:
                await two.acquire_up_to(PARTITIONS)
                await asyncio.sleep(0.02)
        one.lost()
        assert not one.alive and one.owned == set()
        with pytest.raises(ConnectionError):
            await one.share()

    async def test_leases_not_open_take_nothing(self, world: World) -> None:
        leases = await world.leases()
        with pytest.raises(ConnectionError):
            await leases.acquire_up_to(PARTITIONS)
        with pytest.raises(ConnectionError):
            await leases.share()
        assert leases.owned == set()
