"""The rate-limit counters' contract on Redis (:class:`apps.auth.stores.RedisLimitCounters`):
buckets under ``WATCH``, so attempts sent at once are each counted."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from apps.auth.stores import RedisLimitCounters
from shared.redis_client import create_redis
from tests.contracts.limit_counters import LimitCountersContract
from tests.fakes import FakeClock
from tests.support import REDIS


@dataclass
class RedisWorld:
    counters: RedisLimitCounters
    clock: FakeClock


class TestRedisLimitCounters(LimitCountersContract):
    @pytest.fixture
    async def world(self) -> AsyncIterator[RedisWorld]:
        redis = create_redis(f"{REDIS}/15")
        prefix, clock = f"lc{uuid.uuid4().hex[:8]}:", FakeClock()
        try:
            yield RedisWorld(RedisLimitCounters(redis, prefix=prefix, clock=clock), clock)
        finally:
            keys = [key async for key in redis.scan_iter(match=f"{prefix}*")]
            if keys:
                await redis.delete(*keys)
            await redis.aclose()
