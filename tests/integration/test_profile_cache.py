"""The profile cache against a real Redis: an eviction cannot be undone by a late reader."""

from __future__ import annotations

import uuid

import redis.asyncio as aioredis

from apps.users.cache import RedisProfileCache
from tests.support import REDIS


async def test_a_reader_that_loaded_the_row_before_deletion_cannot_refill_the_cache() -> None:
    """Before, eviction deleted the key and a reader's SET NX with the pre-deletion row
    succeeded: the archived profile was served until the TTL ran out."""
    redis = aioredis.from_url(f"{REDIS}/15")
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    cache = RedisProfileCache(redis, prefix=prefix, ttl_s=30)
    user = uuid.uuid4()
    try:
        await cache.fill(user, b'{"display_name": "Ada"}')
        stale = b'{"display_name": "Ada"}'  # a reader loaded this row ...
        await cache.evict(user)  # ... the saga archives the profile and evicts it ...
        await cache.fill(user, stale)  # ... and the reader fills the cache afterwards
        assert await cache.get(user) is None
        await cache.put(user, b'{"display_name": "Ada L."}')  # a real update still lands
        assert await cache.get(user) == b'{"display_name": "Ada L."}'
    finally:
        keys = [k async for k in redis.scan_iter(f"{prefix}*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
