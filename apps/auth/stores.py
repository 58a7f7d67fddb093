"""Redis-backed state of the auth service: sessions, the denylist, login rate limits.

Every call fails closed: a Redis failure becomes ``DependencyUnavailable`` (503).
"""

from __future__ import annotations

import hashlib
from typing import Protocol

import redis.asyncio as aioredis

from shared.auth import denylist_key, session_key
from shared.errors import RateLimited
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
    async def check(self, account: str, client: str) -> None: ...
    async def failed(self, account: str, client: str) -> None: ...
    async def succeeded(self, account: str, client: str) -> None: ...
    async def check_registration(self, client: str) -> None: ...


class RedisLoginLimits:
    """Fixed-window limits: attempts per client address, failures per account *and* client,
    and a much higher ceiling of failures per account from all clients together.

    An attacker hammering an account from one address locks out that address only: the
    owner, from their own address, still logs in. Counters expire with their window (no
    permanent lock-out); a successful login resets that client's count for the account.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        prefix: str,
        window_s: int,
        max_failures_per_account: int,
        max_attempts_per_client: int,
        max_registrations_per_client: int = 10,
        max_failures_per_account_all: int = 100,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._window_s = window_s
        self._max_account = max_failures_per_account
        self._max_client = max_attempts_per_client
        self._max_registrations = max_registrations_per_client
        self._max_account_all = max_failures_per_account_all

    async def check_registration(self, client: str) -> None:
        """Count a sign-up from ``client``; 429 past its limit per window."""
        key = f"{self._prefix}rl:register:client:{client}"
        with unavailable("registration rate limiter"):
            pipe = self._redis.pipeline(transaction=True)
            pipe.incr(key)
            pipe.expire(key, self._window_s, nx=True)
            pipe.ttl(key)
            count, _, ttl = await pipe.execute()
        if int(count) > self._max_registrations:
            raise RateLimited("too many sign-ups from this address", retry_after=_ttl(ttl))

    def _account_key(self, account: str, client: str | None = None) -> str:
        digest = hashlib.sha256(account.encode()).hexdigest()[:32]
        if client is None:
            return f"{self._prefix}rl:login:account:{digest}"
        return f"{self._prefix}rl:login:account:{digest}:client:{client}"

    def _client_key(self, client: str) -> str:
        return f"{self._prefix}rl:login:client:{client}"

    async def check(self, account: str, client: str) -> None:
        """Count this attempt for the client; 429 if client or account is over its limit."""
        client_key = self._client_key(client)
        mine, everyone = self._account_key(account, client), self._account_key(account)
        with unavailable("login rate limiter"):
            pipe = self._redis.pipeline(transaction=True)
            pipe.incr(client_key)
            pipe.expire(client_key, self._window_s, nx=True)
            pipe.ttl(client_key)
            for key in (mine, everyone):
                pipe.get(key)
                pipe.ttl(key)
            attempts, _, client_ttl, failures, ttl, all_failures, all_ttl = await pipe.execute()
        if int(attempts) > self._max_client:
            raise RateLimited(
                "too many login attempts from this address", retry_after=_ttl(client_ttl)
            )
        if failures is not None and int(failures) >= self._max_account:
            raise RateLimited(
                "too many failed logins for this account", retry_after=_ttl(ttl)
            )
        if all_failures is not None and int(all_failures) >= self._max_account_all:
            raise RateLimited(
                "too many failed logins for this account", retry_after=_ttl(all_ttl)
            )

    async def failed(self, account: str, client: str) -> None:
        with unavailable("login rate limiter"):
            pipe = self._redis.pipeline(transaction=True)
            for key in (self._account_key(account, client), self._account_key(account)):
                pipe.incr(key)
                pipe.expire(key, self._window_s, nx=True)
            await pipe.execute()

    async def succeeded(self, account: str, client: str) -> None:
        with unavailable("login rate limiter"):
            await self._redis.delete(self._account_key(account, client))


def _ttl(value: int) -> int:
    return max(int(value), 1)
