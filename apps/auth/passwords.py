"""Password policy (OWASP ASVS) and argon2id hashing off the event loop."""

from __future__ import annotations

import asyncio
import gzip
import secrets
import unicodedata
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path
from typing import Protocol, TypeVar

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

from shared.config import PasswordSettings
from shared.errors import RateLimited, ValidationFailed

MIN_LENGTH = 8
"""ASVS 6.2.1: at least 8 characters (15 recommended; we do not force composition rules)."""
MAX_LENGTH = 128
"""ASVS 6.2.9: at least 64 must be allowed; the cap bounds hashing work. Never truncated."""
T = TypeVar("T")
_COMMON = Path(__file__).resolve().parent / "data" / "common-passwords.txt.gz"


@cache
def common_passwords() -> frozenset[str]:
    """The common-password list, loaded once."""
    with gzip.open(_COMMON, "rt", encoding="utf-8") as f:
        return frozenset(line.strip() for line in f if line.strip())


def normalise_password(password: str) -> str:
    """NFKC, so the same password typed on another keyboard verifies (ASVS 6.2.x)."""
    return unicodedata.normalize("NFKC", password)


def check_password_policy(password: str, *, email: str) -> None:
    """Raise :class:`ValidationFailed` unless ``password`` meets the policy."""
    length = len(password)
    if length < MIN_LENGTH:
        raise ValidationFailed(f"password must have at least {MIN_LENGTH} characters")
    if length > MAX_LENGTH:
        raise ValidationFailed(f"password must have at most {MAX_LENGTH} characters")
    lowered = password.lower()
    if lowered in common_passwords():
        raise ValidationFailed("password is too common; choose another")
    if lowered in {email.lower(), email.split("@", maxsplit=1)[0].lower()}:
        raise ValidationFailed("password must not be the email address")


class Passwords(Protocol):
    """The password-hasher port: :class:`Argon2Passwords`, or a fake in tests."""

    async def hash(self, password: str) -> str: ...

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        """Check ``password``; False for no stored hash (after the time a check takes)."""
        ...

    def needs_rehash(self, stored_hash: str) -> bool:
        """True when the hash was made otherwise than a new one would be."""
        ...


class Argon2Passwords:
    """argon2id in thread pools, so the event loop never waits on it.

    Verifications (logins) and new hashes (registrations, re-hashes) have threads of their
    own, and at most ``max_pending_hashes`` new hashes wait at a time: a registration flood
    answers 429 instead of taking the threads logins need.
    """

    def __init__(
        self, *, time_cost: int, memory_kib: int, parallelism: int, workers: int = 2,
        hash_workers: int = 1, max_pending_hashes: int = 8,
    ) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism, type=Type.ID
        )
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="argon2")
        self._hash_pool = ThreadPoolExecutor(max_workers=hash_workers,
                                             thread_name_prefix="argon2-new")
        self._pending_hashes = 0
        self._max_pending_hashes = max_pending_hashes
        self._dummy: str | None = None

    @classmethod
    def from_settings(cls, settings: PasswordSettings) -> Argon2Passwords:
        """The hasher the ``ARGON2_*`` settings describe."""
        return cls(
            time_cost=settings.time_cost,
            memory_kib=settings.memory_kib,
            parallelism=settings.parallelism,
            max_pending_hashes=settings.max_pending_hashes,
        )

    async def hash(self, password: str) -> str:
        """A new hash; :class:`RateLimited` when too many are already waiting."""
        if self._pending_hashes >= self._max_pending_hashes:
            raise RateLimited("too many sign-ups at once; try again in a moment", retry_after=1)
        self._pending_hashes += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._hash_pool, self._hasher.hash, password)
        finally:
            self._pending_hashes -= 1

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        """Check ``password``; with no stored hash, burn the same time and return False."""
        if stored_hash is None:
            await self._run(self._verify_sync, await self._dummy_hash(), password)
            return False
        return await self._run(self._verify_sync, stored_hash, password)

    def needs_rehash(self, stored_hash: str) -> bool:
        """True when the hash was made with other (older) parameters."""
        return self._hasher.check_needs_rehash(stored_hash)

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        self._hash_pool.shutdown(wait=False)

    def _verify_sync(self, stored_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    async def _dummy_hash(self) -> str:
        if self._dummy is None:
            self._dummy = await self._run(self._hasher.hash, secrets.token_urlsafe(16))
        return self._dummy

    async def _run(self, fn: Callable[..., T], *args: str) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
