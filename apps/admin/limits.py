"""Upload rate limit per user (Redis, fixed window): a user may start only so many uploads a
minute, so one account cannot keep the inspection threads and the OCR queue busy."""

from __future__ import annotations

import uuid
from typing import Any

from shared.errors import RateLimited
from shared.redis_client import unavailable

WINDOW_S = 60


class RedisUploadLimit:
    def __init__(self, redis: Any, *, prefix: str, per_minute: int) -> None:
        self._redis, self._prefix, self._per_minute = redis, prefix, per_minute

    async def check(self, user_id: uuid.UUID) -> None:
        """Count one upload of ``user_id``; :class:`RateLimited` (429) past the limit."""
        key = f"{self._prefix}rl:upload:{user_id}"
        with unavailable("upload rate limiter"):
            pipe = self._redis.pipeline(transaction=True)
            pipe.incr(key)
            pipe.expire(key, WINDOW_S, nx=True)
            pipe.ttl(key)
            count, _, ttl = await pipe.execute()
        if int(count) > self._per_minute:
            raise RateLimited(
                f"more than {self._per_minute} uploads in a minute; try again shortly",
                retry_after=max(int(ttl), 1),
            )
