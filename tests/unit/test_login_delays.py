"""Growing delays on failed logins, on fakes: the rule, and the auth service with it (counters
in memory on a fake clock, known devices in a dict). The owner is never made to wait by an
attacker's failures: not from another address, and not on a device they signed in with."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import cast

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from apps.auth.keys import KeyRing
from apps.auth.login_delays import Bucket, Ceilings, DelayRule, LoginLimiter, in_words
from apps.auth.services import AuthService
from apps.auth.tokens import TokenIssuer
from shared.auth import JwksCache, TokenVerifier
from shared.errors import AuthenticationFailed, RateLimited
from tests.fakes import (
    FakeAccountStore,
    FakeClock,
    FakeKnownDevices,
    FakePasswords,
    FakeSessions,
    MemoryKeys,
    MemoryLimitCounters,
)

PASSWORD = "correct horse battery staple"
OWNER = "ada@example.org"
ATTACKER, HOME, ELSEWHERE = "203.0.113.9", "198.51.100.7", "192.0.2.44"
RULE = DelayRule(free_failures=3, base_s=1.0, max_s=8.0, memory_s=3600.0)


def test_three_free_then_doubling_up_to_the_cap() -> None:
    assert [RULE.delay(n) for n in range(1, 9)] == [0, 0, 1, 2, 4, 8, 8, 8]
    assert RULE.delay(10**9) == 8  # no overflow however long an attack goes on


def test_an_attempt_during_the_wait_is_refused_with_when_to_come_back() -> None:
    bucket = Bucket()
    for _ in range(4):
        bucket = RULE.admit(bucket, 100.0 + bucket.attempts * 10)
    assert bucket == Bucket(4, 130.0 + 2)
    with pytest.raises(RateLimited) as refused:
        RULE.admit(bucket, 130.5)
    assert refused.value.retry_after == 2  # 1.5 s left, rounded up
    assert "Please wait 2 seconds" in str(refused.value)
    assert "a device you have used before" in str(refused.value)
    assert RULE.admit(bucket, 132.0) == Bucket(5, 132.0 + 4)  # the wait over: admitted


def test_waits_in_words() -> None:
    assert [in_words(s) for s in (1, 8, 89, 90, 900, 5400)] == [
        "1 second", "8 seconds", "89 seconds", "2 minutes", "15 minutes", "2 hours"
    ]


@dataclass
class World:
    service: AuthService
    clock: FakeClock
    devices: FakeKnownDevices

    async def login(self, password: str, address: str, device: str | None = None,
                    email: str = OWNER) -> str:
        """'ok', 'wrong' or 'wait N'; the device token a success returns is kept."""
        try:
            tokens = await self.service.login(email, password, client=address,
                                              device_token=device)
        except AuthenticationFailed:
            return "wrong"
        except RateLimited as exc:
            return f"wait {exc.retry_after}"
        self.last_device = tokens.device_token
        return "ok"

    last_device: str | None = None


async def world(ceiling: int = 100) -> World:
    ring = KeyRing(MemoryKeys(), ttl_s=300)  # type: ignore[arg-type]
    sessions, accounts, passwords = FakeSessions(), FakeAccountStore(), FakePasswords()
    counters, devices = MemoryLimitCounters(), FakeKnownDevices()
    limiter = LoginLimiter(counters, RULE, Ceilings(
        window_s=300, attempts_per_address=1000, failures_per_account=ceiling,
        registrations_per_address=10,
    ))
    verifier = TokenVerifier(JwksCache(ring, ttl_s=300, min_refetch_interval_s=60), sessions,
                             issuer="iss", audience="aud")
    service = AuthService(
        cast(async_sessionmaker[AsyncSession], None), passwords,
        TokenIssuer(ring, issuer="iss", audience="aud", access_ttl_s=300), verifier, sessions,
        limiter, refresh_ttl_s=3600, accounts=accounts, devices=devices,
    )
    for email in (OWNER, "bob@example.org"):
        accounts.add_user(email, await passwords.hash(PASSWORD))
    return World(service, counters.clock, devices)


async def test_failures_from_one_client_make_its_next_attempts_wait_longer_and_longer() -> None:
    w = await world()
    assert [await w.login("guess", ATTACKER) for _ in range(3)] == ["wrong"] * 3
    seen = []
    for _ in range(5):
        refused = await w.login("guess", ATTACKER)
        seen.append(refused)
        w.clock.advance(int(refused.split()[1]))  # wait exactly as told
        assert await w.login("guess", ATTACKER) == "wrong"
    assert seen == ["wait 1", "wait 2", "wait 4", "wait 8", "wait 8"]  # capped


async def test_the_owner_elsewhere_and_on_a_known_device_is_not_made_to_wait() -> None:
    w = await world()
    assert await w.login(PASSWORD, HOME) == "ok"  # once, long ago: this device is known
    device = w.last_device
    assert device
    for _ in range(3):
        await w.login("guess", ATTACKER)
    assert (await w.login("guess", ATTACKER)).startswith("wait")
    assert await w.login(PASSWORD, ELSEWHERE) == "ok"  # another address: its own bucket
    # Behind the attacker's very address (one NAT): the known device still gets in.
    assert await w.login(PASSWORD, ATTACKER, device) == "ok"
    assert w.last_device == device  # the same token, its lifetime renewed


async def test_a_device_token_counts_only_for_the_account_it_was_issued_to() -> None:
    w = await world()
    assert await w.login(PASSWORD, ATTACKER, email="bob@example.org") == "ok"
    bobs = w.last_device  # the attacker's own account's token
    for token in (bobs, "made-up-token"):
        w = await world()
        for _ in range(3):
            assert await w.login("guess", ATTACKER, token) == "wrong"
        assert await w.login("guess", ATTACKER, token) == "wait 1"  # the address's bucket
        assert await w.login("guess", ATTACKER) == "wait 1"  # the same one


async def test_a_known_device_that_fails_is_delayed_too_but_alone() -> None:
    w = await world()
    assert await w.login(PASSWORD, HOME) == "ok"
    device = w.last_device
    for _ in range(3):
        assert await w.login("typo", HOME, device) == "wrong"
    assert await w.login(PASSWORD, HOME, device) == "wait 1"
    assert await w.login(PASSWORD, HOME) == "ok"  # the address is a bucket of its own


async def test_a_success_forgets_the_failures() -> None:
    w = await world()
    for _ in range(2):
        await w.login("typo", HOME)
    assert await w.login(PASSWORD, HOME) == "ok"
    assert [await w.login("typo", HOME) for _ in range(3)] == ["wrong"] * 3


async def test_failures_are_forgotten_after_the_memory_not_before() -> None:
    w = await world()
    for _ in range(3):
        await w.login("guess", ATTACKER)
    w.clock.advance(3600 - 1)
    assert await w.login("guess", ATTACKER) == "wrong"  # the wait is over, still counted
    assert await w.login("guess", ATTACKER) == "wait 2"
    w.clock.advance(2 + 3600 + 1)
    assert [await w.login("guess", ATTACKER) for _ in range(3)] == ["wrong"] * 3


async def test_the_account_ceiling_stops_unknown_clients_but_not_the_owners_device() -> None:
    """A guessing attack from many addresses fills the account's ceiling; the owner's known
    device is exempt from it (it has a bucket of its own)."""
    w = await world(ceiling=5)
    assert await w.login(PASSWORD, HOME) == "ok"
    device = w.last_device
    for n in range(5):
        assert await w.login("guess", f"203.0.113.{n}") == "wrong"
    assert (await w.login(PASSWORD, "203.0.113.200")).startswith("wait")
    assert (await w.login(PASSWORD, HOME)).startswith("wait")  # an unknown client
    assert await w.login(PASSWORD, HOME, device) == "ok"


async def test_concurrent_attempts_cannot_slip_through_before_the_failures_are_written() -> None:
    w = await world()
    answers = await asyncio.gather(*(w.login("guess", ATTACKER) for _ in range(20)))
    assert sorted(answers) == ["wait 1"] * 17 + ["wrong"] * 3
