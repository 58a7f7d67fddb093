"""Browser sessions of a frontend: an opaque cookie id in the browser, everything else in Redis.

The cookie carries 256 random bits and nothing else. Redis keys are the SHA-256 of that id,
so a copy of Redis does not hand out live cookies. A session holds the CSRF token of its
forms, and once signed in the access and refresh tokens, the caller's identity and the last
profile seen (shown read-only while the users API is down). Tokens never leave the server.

A session is created the first time a form is shown (an anonymous session holding only the
CSRF token, so sign-in and registration are CSRF-protected too); signing in replaces it with a
fresh id (no session fixation).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import redis.asyncio as aioredis

from shared.redis_client import unavailable

SESSION_STORE = "session store"
"""How a Redis failure of the session store names itself (the error page tells it apart)."""
ANONYMOUS_TTL_S = 3600
"""An anonymous session (a form's CSRF token) lives at most this long."""


def new_id() -> str:
    return secrets.token_urlsafe(32)


@dataclass
class Session:
    """What the server remembers about one browser."""

    id: str
    csrf: str = field(default_factory=new_id)
    user_id: str | None = None
    email: str | None = None
    roles: list[str] = field(default_factory=list)
    access_token: str | None = None
    access_expires_at: float = 0.0
    """Epoch seconds; the token is refreshed shortly before."""
    refresh_token: str | None = None
    profile: dict[str, Any] | None = None
    """The last profile the users API returned (the fallback while it is down)."""
    saga: dict[str, str] | None = None
    """``{saga_id, watch_token}`` of an account deletion this browser started."""
    notice: str | None = None
    """A one-time message shown on the next page."""
    created_at: float = field(default_factory=time.time)

    @property
    def signed_in(self) -> bool:
        return self.access_token is not None

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    def access_valid(self, now: float, margin_s: float = 0.0) -> bool:
        return self.access_token is not None and now + margin_s < self.access_expires_at

    def to_json(self) -> str:
        data = asdict(self)
        del data["id"]  # the key is a hash of it; the id itself is never stored
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, session_id: str, raw: bytes | str) -> Session:
        data = json.loads(raw)
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(id=session_id, **known)


class SessionStore(Protocol):
    """Where sessions live; every method raises ``DependencyUnavailable`` when it cannot."""

    async def load(self, session_id: str) -> Session | None: ...

    async def save(self, session: Session, ttl_s: int) -> None: ...

    async def delete(self, session_id: str) -> None: ...

    async def touch(self, session_id: str, ttl_s: int) -> None:
        """Extend the session's lifetime (a person is active)."""

    async def lock(self, session_id: str, ttl_s: float) -> bool:
        """Take the session's refresh lock (one refresh at a time); False if taken."""

    async def unlock(self, session_id: str) -> None: ...


class RedisSessionStore:
    """Sessions as JSON strings with a TTL, under ``<prefix><app>:session:<sha256(id)>``."""

    def __init__(self, redis: aioredis.Redis, *, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix

    def _key(self, session_id: str, kind: str = "session") -> str:
        digest = hashlib.sha256(session_id.encode()).hexdigest()
        return f"{self._prefix}{kind}:{digest}"

    async def load(self, session_id: str) -> Session | None:
        with unavailable(SESSION_STORE):
            raw = await self._redis.get(self._key(session_id))
        if raw is None:
            return None
        try:
            return Session.from_json(session_id, raw)
        except (ValueError, TypeError):
            return None  # an unreadable session is no session: sign in again

    async def save(self, session: Session, ttl_s: int) -> None:
        with unavailable(SESSION_STORE):
            await self._redis.set(self._key(session.id), session.to_json(), ex=max(1, ttl_s))

    async def delete(self, session_id: str) -> None:
        with unavailable(SESSION_STORE):
            await self._redis.delete(self._key(session_id), self._key(session_id, "lock"))

    async def touch(self, session_id: str, ttl_s: int) -> None:
        with unavailable(SESSION_STORE):
            await self._redis.expire(self._key(session_id), max(1, ttl_s))

    async def lock(self, session_id: str, ttl_s: float) -> bool:
        with unavailable(SESSION_STORE):
            taken = await self._redis.set(
                self._key(session_id, "lock"), b"1", nx=True, px=int(ttl_s * 1000)
            )
        return bool(taken)

    async def unlock(self, session_id: str) -> None:
        with unavailable(SESSION_STORE):
            await self._redis.delete(self._key(session_id, "lock"))

    async def ping(self) -> None:
        await self._redis.ping()


class MemorySessionStore:
    """The fake: a dict (unit tests)."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.locks: set[str] = set()
        self.touched = 0

    async def load(self, session_id: str) -> Session | None:
        raw = self.data.get(session_id)
        return None if raw is None else Session.from_json(session_id, raw)

    async def save(self, session: Session, ttl_s: int) -> None:
        self.data[session.id] = session.to_json()

    async def delete(self, session_id: str) -> None:
        self.data.pop(session_id, None)
        self.locks.discard(session_id)

    async def touch(self, session_id: str, ttl_s: int) -> None:
        if session_id in self.data:
            self.touched += 1

    async def lock(self, session_id: str, ttl_s: float) -> bool:
        if session_id in self.locks:
            return False
        self.locks.add(session_id)
        return True

    async def unlock(self, session_id: str) -> None:
        self.locks.discard(session_id)
