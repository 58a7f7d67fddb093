"""Redis read-through cache of encoded profiles; fails open (the database still answers).

Fills use ``SET NX`` and updates a plain ``SET``: a reader that loaded an old row before
an update can never overwrite the newer value the update wrote. An eviction (the profile
archived or restored by the deletion saga) leaves a tombstone for the TTL instead of
deleting the key, so a reader that loaded the row just before the deletion cannot fill
the cache with it afterwards (``SET NX`` fails on the tombstone; reads treat it as a miss).
After a Redis failure the cache is bypassed for ``cooldown_s`` so that a dead Redis costs
no latency.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Protocol

import redis.asyncio as aioredis

from shared.logging import get_logger
from shared.redis_client import REDIS_ERRORS

log = get_logger(__name__)

TOMBSTONE = b"\x00evicted"
"""Value of an evicted key: never a JSON profile."""


class ProfileCache(Protocol):
    async def get(self, user_id: uuid.UUID) -> bytes | None: ...
    async def fill(self, user_id: uuid.UUID, body: bytes) -> None: ...
    async def put(self, user_id: uuid.UUID, body: bytes) -> None: ...
    async def evict(self, user_id: uuid.UUID) -> None: ...


class RedisProfileCache:
    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        prefix: str,
        ttl_s: int,
        cooldown_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._ttl_s = ttl_s
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._down_until = 0.0

    def _key(self, user_id: uuid.UUID) -> str:
        return f"{self._prefix}profile:{user_id}"

    async def get(self, user_id: uuid.UUID) -> bytes | None:
        if self._bypassed():
            return None
        try:
            value = await self._redis.get(self._key(user_id))
        except REDIS_ERRORS as exc:
            self._failed(exc)
            return None
        return value if isinstance(value, bytes) and value != TOMBSTONE else None

    async def fill(self, user_id: uuid.UUID, body: bytes) -> None:
        await self._set(user_id, body, nx=True)

    async def put(self, user_id: uuid.UUID, body: bytes) -> None:
        await self._set(user_id, body, nx=False)

    async def evict(self, user_id: uuid.UUID) -> None:
        """Forget the profile (archived or restored by the deletion saga); fails open."""
        try:
            await self._redis.set(self._key(user_id), TOMBSTONE, ex=self._ttl_s)
        except REDIS_ERRORS as exc:
            self._failed(exc)

    async def _set(self, user_id: uuid.UUID, body: bytes, *, nx: bool) -> None:
        if self._bypassed():
            return
        try:
            await self._redis.set(self._key(user_id), body, ex=self._ttl_s, nx=nx)
        except REDIS_ERRORS as exc:
            self._failed(exc)

    def _bypassed(self) -> bool:
        return self._clock() < self._down_until

    def _failed(self, exc: BaseException) -> None:
        self._down_until = self._clock() + self._cooldown_s
        log.warning("profile_cache.unavailable", error=repr(exc), bypass_s=self._cooldown_s)
