"""Redis clients with short timeouts, and the translation of Redis failures.

Every Redis call in the product has to fail fast when Redis is away: an auth check that
waits 30 s for a socket is an outage of its own. Callers that must fail closed translate
driver errors into :class:`shared.errors.DependencyUnavailable` with :func:`unavailable`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from shared.errors import DependencyUnavailable

REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)
"""What a Redis call raises when Redis is unreachable, slow or refusing."""


def create_redis(url: str, *, timeout_s: float = 0.5) -> aioredis.Redis:
    """A pooled async client that gives up quickly instead of hanging."""
    return aioredis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        health_check_interval=30,
        # One quick retry covers a connection the server closed; more would only delay
        # the 503 a caller owes its client when Redis is really gone.
        retry=Retry(NoBackoff(), 1),
        decode_responses=False,
    )


@contextmanager
def unavailable(what: str) -> Iterator[None]:
    """Translate any Redis failure in the block into ``DependencyUnavailable``."""
    try:
        yield
    except REDIS_ERRORS as exc:
        raise DependencyUnavailable(f"{what}: Redis is unavailable") from exc
