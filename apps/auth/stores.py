"""Redis-backed state of the auth service: sessions, the denylist, login rate-limit counters
and known devices.

Every call fails closed: a Redis failure becomes ``DependencyUnavailable`` (503).
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from collections.abc import Callable
from typing import Protocol

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from apps.auth.login_delays import (
    Bucket,
    DelayRule,
    LoginClient,
    account_digest,
    too_many_failures,
)
from shared.auth import denylist_key, session_key
from shared.redis_client import unavailable


class Sessions(Protocol):
    async def open(self, session_id: str, user_id: str, ttl_s: int) -> None: ...
    async def close(self, session_id: str) -> None: ...
    async def alive(self, session_id: str) -> bool: ...
    async def deny(self, jti: str, ttl_s: int) -> None: ...


class RedisSessions:
    """Sessions (one per refresh-token family) and the access-token denylist."""

    def __init__(self, redis: aioredis.Redis, *, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix

    async def open(self, session_id: str, user_id: str, ttl_s: int) -> None:
        with unavailable("session store"):
            await self._redis.set(session_key(self._prefix, session_id), user_id, ex=max(ttl_s, 1))

    async def close(self, session_id: str) -> None:
        with unavailable("session store"):
            await self._redis.delete(session_key(self._prefix, session_id))

    async def alive(self, session_id: str) -> bool:
        with unavailable("session store"):
            return bool(await self._redis.exists(session_key(self._prefix, session_id)))

    async def deny(self, jti: str, ttl_s: int) -> None:
        """Denylist an access token until it would have expired anyway."""
        with unavailable("token denylist"):
            await self._redis.set(denylist_key(self._prefix, jti), b"1", ex=max(ttl_s, 1))


class LoginLimits(Protocol):
    """Login and sign-up rate limits (:class:`apps.auth.login_delays.LoginLimiter`)."""

    async def check(self, account: str, client: LoginClient) -> None: ...
    async def failed(self, account: str, client: LoginClient) -> None: ...
    async def succeeded(self, account: str, client: LoginClient) -> None: ...
    async def check_registration(self, client: str) -> None: ...


class RedisLimitCounters:
    """:class:`apps.auth.login_delays.LimitCounters` in Redis, every key under ``prefix``.

    A bucket is a hash (``attempts``, ``until``) updated under ``WATCH``: two attempts at
    once on one bucket cannot both read the old state (the loser retries on the new one).
    """

    def __init__(
        self, redis: aioredis.Redis, *, prefix: str, clock: Callable[[], float] = time.time
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._clock = clock

    async def hit(self, key: str, window_s: int) -> tuple[int, int]:
        with unavailable("rate limiter"):
            pipe = self._redis.pipeline(transaction=True)
            pipe.incr(self._prefix + key)
            pipe.expire(self._prefix + key, window_s, nx=True)
            pipe.ttl(self._prefix + key)
            count, _, ttl = await pipe.execute()
        return int(count), int(ttl)

    async def peek(self, key: str) -> tuple[int, int]:
        with unavailable("rate limiter"):
            pipe = self._redis.pipeline(transaction=False)
            pipe.get(self._prefix + key)
            pipe.ttl(self._prefix + key)
            count, ttl = await pipe.execute()
        return (0, 0) if count is None else (int(count), int(ttl))

    async def admit(self, key: str, rule: DelayRule) -> None:
        name = self._prefix + key
        with unavailable("rate limiter"):
            async with self._redis.pipeline(transaction=True) as pipe:
                for _ in range(_WATCH_RETRIES):
                    if await self._admit_once(pipe, name, rule):
                        return
        # Many attempts at the same instant on one bucket: only an attacker does that.
        raise too_many_failures(1)

    async def _admit_once(self, pipe: Pipeline, name: str, rule: DelayRule) -> bool:
        """Read, decide, write unless the bucket changed meanwhile (then False: again)."""
        await pipe.watch(name)
        attempts, until = await pipe.hmget(name, ["attempts", "until"])
        now = self._clock()
        admitted = rule.admit(Bucket(int(attempts or 0), float(until or 0.0)), now)
        pipe.multi()  # type: ignore[no-untyped-call]
        pipe.hset(name, mapping={"attempts": admitted.attempts, "until": repr(admitted.until)})
        pipe.pexpire(name, math.ceil(rule.keep_for(admitted, now) * 1000))
        try:
            await pipe.execute()
        except WatchError:
            return False
        return True

    async def forget(self, key: str) -> None:
        with unavailable("rate limiter"):
            await self._redis.delete(self._prefix + key)


_WATCH_RETRIES = 8


class KnownDevices(Protocol):
    """Device tokens: proof that a client has signed in to an account before."""

    async def recognise(self, account: str, token: str) -> str | None:
        """The device id if ``token`` was issued to ``account`` and is still valid."""
        ...

    async def remember(self, account: str, token: str | None) -> str:
        """After a successful login: ``token`` again (recognised; its lifetime starts over)
        or a new one for this account."""
        ...


class RedisKnownDevices:
    """Device tokens are random (256 bits); Redis keeps only their hash, naming the account,
    for ``ttl_s`` after their last successful use."""

    def __init__(self, redis: aioredis.Redis, *, prefix: str, ttl_s: int) -> None:
        self._redis = redis
        self._prefix = prefix
        self._ttl_s = ttl_s

    def _key(self, token: str) -> str:
        return f"{self._prefix}login:device:{device_id(token)}"

    async def recognise(self, account: str, token: str) -> str | None:
        with unavailable("device store"):
            owner = await self._redis.get(self._key(token))
        if owner is None:
            return None
        if (owner.decode() if isinstance(owner, bytes) else owner) != account_digest(account):
            return None
        return device_id(token)

    async def remember(self, account: str, token: str | None) -> str:
        if token is None or await self.recognise(account, token) is None:
            token = secrets.token_urlsafe(32)
        with unavailable("device store"):
            await self._redis.set(self._key(token), account_digest(account), ex=self._ttl_s)
        return token


def device_id(token: str) -> str:
    """A device token's id: its hash (the token itself is never stored)."""
    return hashlib.sha256(token.encode()).hexdigest()[:32]
