"""The password hasher's contract, on argon2id (cheap parameters) and on the fake the auth
unit tests use: both run here, neither needs a service."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from apps.auth.passwords import Argon2Passwords, Passwords
from tests.fakes import FakePasswords


@pytest.fixture(params=["argon2", "fake"])
def passwords(request: pytest.FixtureRequest) -> Iterator[Passwords]:
    if request.param == "fake":
        yield FakePasswords()
        return
    hasher = Argon2Passwords(time_cost=1, memory_kib=8192, parallelism=1)
    yield hasher
    hasher.close()


async def test_a_hash_verifies_its_password_only(passwords: Passwords) -> None:
    stored = await passwords.hash("correct horse battery staple")
    assert "correct horse" not in stored
    assert await passwords.verify(stored, "correct horse battery staple")
    assert not await passwords.verify(stored, "correct horse battery stapl")


async def test_two_hashes_of_one_password_differ(passwords: Passwords) -> None:
    assert await passwords.hash("same password") != await passwords.hash("same password")


async def test_no_stored_hash_never_verifies(passwords: Passwords) -> None:
    assert not await passwords.verify(None, "anything")


async def test_a_garbled_hash_does_not_verify(passwords: Passwords) -> None:
    assert not await passwords.verify("not a hash", "anything")


def _other_scheme(passwords: Passwords) -> FakePasswords | Argon2Passwords:
    """A hasher of the same kind with other parameters (an older configuration)."""
    if isinstance(passwords, FakePasswords):
        return FakePasswords("fake0")
    return Argon2Passwords(time_cost=2, memory_kib=16384, parallelism=1)


async def test_a_fresh_hash_needs_no_rehash_and_an_older_one_does(passwords: Passwords) -> None:
    assert not passwords.needs_rehash(await passwords.hash("pw"))
    older = _other_scheme(passwords)
    foreign = await older.hash("pw")
    if isinstance(older, Argon2Passwords):
        older.close()
    assert passwords.needs_rehash(foreign)
    assert await passwords.verify(foreign, "pw")  # still verifies; login then rehashes
