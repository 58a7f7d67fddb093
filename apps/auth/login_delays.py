"""Growing delays on failed logins, per account and client; the owner's known devices apart.

The rule
--------
Each (account, client) pair has a bucket: the attempts it has made since its last success
and the moment its next attempt is allowed. ``free_failures`` (N) attempts go through at
once; after the N-th, every attempt makes the next one wait ``base_s * 2 ** (attempts -
N)`` seconds (1, 2, 4 … with the defaults), at most ``max_s``. An attempt during the wait
answers 429 with ``Retry-After`` and is not counted; a success empties the bucket. A
bucket is forgotten ``memory_s`` after its last attempt (long, so that waiting for it to
be forgotten never pays better than the delays).

An attempt is counted when it is admitted, before the password is checked, and a success
takes it back (the bucket is emptied): so concurrent attempts cannot all slip through
before the first failure is written. (Counting at admission also means that an attempt
that errs for another reason, a database away, counts as a failure; that only errs on
the careful side.)

Which client
------------
A client is its **device** when it presents a device token that a successful login of
*this* account issued (:class:`KnownDevices`), else its **address** (``TRUSTED_PROXIES``
decide which). An attacker's failures from any address fill only the buckets of those
addresses: the owner, on a device that has signed in to the account before, keeps a bucket
of their own, and is also exempt from the per-address and per-account ceilings that an
attacker can fill (``LOGIN_MAX_ATTEMPTS_PER_CLIENT``, ``LOGIN_MAX_FAILURES_PER_ACCOUNT_ALL``).
A device token is valid for one account only: someone else's token, or a made-up one,
changes nothing. A stolen token is delayed like any client, and a password change does
not invalidate it (it only ever buys a bucket of its own, never a skipped check).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Protocol

from shared.errors import RateLimited


@dataclass(frozen=True)
class LoginClient:
    """Who is attempting a login: its address, and its device if it proved a known one."""

    address: str
    device: str | None = None
    """The id of a device token issued to this account by an earlier successful login."""

    @property
    def known(self) -> bool:
        return self.device is not None

    @property
    def key(self) -> str:
        """The bucket's name: the device when known, else the address."""
        return f"device:{self.device}" if self.device else f"address:{self.address}"


@dataclass(frozen=True)
class Bucket:
    """One (account, client) pair's state."""

    attempts: int = 0
    """Admitted attempts since the last success."""
    until: float = 0.0
    """Epoch seconds before which the next attempt is refused."""


@dataclass(frozen=True)
class DelayRule:
    free_failures: int
    """Attempts before the delays start (``LOGIN_MAX_FAILURES_PER_ACCOUNT``)."""
    base_s: float
    """The first delay; each further attempt doubles it (``LOGIN_DELAY_BASE_S``)."""
    max_s: float
    """The longest delay (``LOGIN_DELAY_MAX_S``)."""
    memory_s: float
    """How long a bucket is kept after its last attempt (``LOGIN_DELAY_MEMORY_S``)."""

    def delay(self, attempts: int) -> float:
        """The wait after the ``attempts``-th attempt (0 while still free)."""
        if attempts < self.free_failures:
            return 0.0
        # 2 ** 60 is far past any cap; a bigger exponent would only overflow the float.
        return min(self.base_s * 2.0 ** min(attempts - self.free_failures, 60), self.max_s)

    def admit(self, bucket: Bucket, now: float) -> Bucket:
        """The bucket after admitting one more attempt at ``now``; :class:`RateLimited`
        while it must still wait."""
        if now < bucket.until:
            raise too_many_failures(bucket.until - now)
        attempts = bucket.attempts + 1
        return Bucket(attempts, now + self.delay(attempts))

    def keep_for(self, bucket: Bucket, now: float) -> float:
        """Seconds the bucket must be stored from ``now`` (its wait, then the memory)."""
        return max(bucket.until - now, 0.0) + self.memory_s


def too_many_failures(wait_s: float) -> RateLimited:
    """429 with ``Retry-After`` and words a person understands."""
    seconds = max(math.ceil(wait_s), 1)
    return RateLimited(
        "Too many failed sign-ins to this account from this device or network. Please wait "
        f"{in_words(seconds)} and try again, or sign in from a device you have used before.",
        retry_after=seconds,
    )


def in_words(seconds: int) -> str:
    if seconds < 90:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    minutes = math.ceil(seconds / 60)
    if minutes < 90:
        return f"{minutes} minutes"
    return f"{math.ceil(minutes / 60)} hours"


def account_digest(account: str) -> str:
    """The account's name in Redis keys (never the email itself)."""
    return hashlib.sha256(account.encode()).hexdigest()[:32]


class LimitCounters(Protocol):
    """Where the limits keep their counts (Redis; a dict in the unit tests)."""

    async def hit(self, key: str, window_s: int) -> tuple[int, int]:
        """Count one in ``key``'s fixed window: (count, seconds left in the window)."""
        ...

    async def peek(self, key: str) -> tuple[int, int]:
        """(count, seconds left) of ``key`` without counting; (0, 0) when there is none."""
        ...

    async def admit(self, key: str, rule: DelayRule) -> None:
        """Atomically: :meth:`DelayRule.admit` on the bucket ``key`` and store the result."""
        ...

    async def forget(self, key: str) -> None: ...


@dataclass(frozen=True)
class Ceilings:
    """Fixed-window limits per ``LOGIN_WINDOW_S``: attempts per address, failures per account
    from every unknown client together, sign-ups per address."""

    window_s: int
    attempts_per_address: int
    failures_per_account: int
    registrations_per_address: int


class LoginLimiter:
    """:class:`apps.auth.stores.LoginLimits`: the delays of :class:`DelayRule` per
    (account, client), and the :class:`Ceilings` for clients that are not a known device."""

    def __init__(self, counters: LimitCounters, rule: DelayRule, ceilings: Ceilings) -> None:
        self._counters = counters
        self._rule = rule
        self._ceilings = ceilings

    async def check(self, account: str, client: LoginClient) -> None:
        """Admit one login attempt (and count it), or :class:`RateLimited`."""
        if not client.known:
            await self._check_ceilings(account, client)
        await self._counters.admit(_bucket_key(account, client), self._rule)

    async def _check_ceilings(self, account: str, client: LoginClient) -> None:
        limits = self._ceilings
        attempts, ttl = await self._counters.hit(
            f"rl:login:client:{client.address}", limits.window_s
        )
        if attempts > limits.attempts_per_address:
            raise RateLimited("too many login attempts from this address", retry_after=max(ttl, 1))
        failures, ttl = await self._counters.peek(f"rl:login:account:{account_digest(account)}")
        if failures >= limits.failures_per_account:
            raise RateLimited("too many failed logins for this account", retry_after=max(ttl, 1))

    async def failed(self, account: str, client: LoginClient) -> None:
        """The attempt failed: it counts toward the account's ceiling (its bucket counted it
        when it was admitted)."""
        if not client.known:
            key = f"rl:login:account:{account_digest(account)}"
            await self._counters.hit(key, self._ceilings.window_s)

    async def succeeded(self, account: str, client: LoginClient) -> None:
        await self._counters.forget(_bucket_key(account, client))

    async def check_registration(self, client: str) -> None:
        """Count a sign-up from ``client``; 429 past its limit per window."""
        count, ttl = await self._counters.hit(
            f"rl:register:client:{client}", self._ceilings.window_s
        )
        if count > self._ceilings.registrations_per_address:
            raise RateLimited("too many sign-ups from this address", retry_after=max(ttl, 1))


def _bucket_key(account: str, client: LoginClient) -> str:
    return f"rl:login:delay:{account_digest(account)}:{client.key}"
