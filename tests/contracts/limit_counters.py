"""The rate-limit counters' contract (:class:`apps.auth.login_delays.LimitCounters`), for the
in-memory fake and Redis alike.

A subclass provides ``world``: counters on a :class:`tests.fakes.FakeClock` (the buckets'
waits follow it; fixed windows are the store's own) and a key prefix of its own.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import pytest

from apps.auth.login_delays import DelayRule, LimitCounters
from shared.errors import RateLimited
from tests.fakes import FakeClock

RULE = DelayRule(free_failures=3, base_s=10.0, max_s=40.0, memory_s=600.0)


class World(Protocol):
    counters: LimitCounters
    clock: FakeClock


class LimitCountersContract:
    async def test_a_fixed_window_counts_and_says_how_long_it_lasts(self, world: World) -> None:
        assert await world.counters.peek("w") == (0, 0)
        assert [(await world.counters.hit("w", 300))[0] for _ in range(3)] == [1, 2, 3]
        count, ttl = await world.counters.peek("w")
        assert count == 3 and 290 <= ttl <= 300

    async def test_a_bucket_admits_the_free_attempts_then_makes_them_wait(
        self, world: World
    ) -> None:
        for _ in range(3):
            await world.counters.admit("b", RULE)
        with pytest.raises(RateLimited) as refused:
            await world.counters.admit("b", RULE)
        assert refused.value.retry_after == 10
        world.clock.advance(10)
        await world.counters.admit("b", RULE)  # the wait is over
        world.clock.advance(19)
        with pytest.raises(RateLimited) as refused:
            await world.counters.admit("b", RULE)
        assert refused.value.retry_after == 1  # 20 s after the 4th: doubled

    async def test_forgetting_a_bucket_starts_it_afresh(self, world: World) -> None:
        for _ in range(3):
            await world.counters.admit("f", RULE)
        await world.counters.forget("f")
        for _ in range(3):
            await world.counters.admit("f", RULE)

    async def test_attempts_at_once_are_each_counted(self, world: World) -> None:
        results = await asyncio.gather(
            *(world.counters.admit("c", RULE) for _ in range(12)), return_exceptions=True
        )
        assert sum(r is None for r in results) == 3
        assert all(isinstance(r, RateLimited) for r in results if r is not None)
