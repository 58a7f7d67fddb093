"""Login and refresh rotation on fakes (accounts, sessions, limits, hasher) with real
signed tokens: the rules of the auth service without PostgreSQL or Redis."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from apps.auth.keys import KeyRing
from apps.auth.models import UserStatus
from apps.auth.services import INVALID_CREDENTIALS, AuthService, Tokens
from apps.auth.tokens import TokenIssuer
from shared.auth import REFRESH, JwksCache, TokenVerifier
from shared.errors import AuthenticationFailed
from tests.fakes import (
    FakeAccountStore,
    FakeLoginLimits,
    FakePasswords,
    FakeSessions,
    MemoryKeys,
)

ISS, AUD = "ams-auth", "ams-api"
PASSWORD = "correct horse battery staple"


@dataclass
class Auth:
    service: AuthService
    accounts: FakeAccountStore
    sessions: FakeSessions
    limits: FakeLoginLimits
    passwords: FakePasswords
    verifier: TokenVerifier

    async def user(self, email: str = "ada@example.org", **kw: Any) -> Any:
        return self.accounts.add_user(email, await self.passwords.hash(PASSWORD), **kw)

    async def family_of(self, tokens: Tokens) -> str:
        claims = await self.verifier.decode(tokens.refresh_token, expected_type=REFRESH)
        return str(claims["sid"])


def build(grace_s: float = 0.0) -> Auth:
    ring = KeyRing(MemoryKeys(), ttl_s=300)  # type: ignore[arg-type]
    sessions, accounts = FakeSessions(), FakeAccountStore()
    limits, passwords = FakeLoginLimits(), FakePasswords()
    verifier = TokenVerifier(
        JwksCache(ring, ttl_s=300, min_refetch_interval_s=60), sessions, issuer=ISS, audience=AUD
    )
    service = AuthService(
        cast(async_sessionmaker[AsyncSession], None), passwords,
        TokenIssuer(ring, issuer=ISS, audience=AUD, access_ttl_s=300), verifier, sessions,
        limits, refresh_ttl_s=3600, refresh_reuse_grace_s=grace_s, accounts=accounts,
    )
    return Auth(service, accounts, sessions, limits, passwords, verifier)


@pytest.fixture
def auth() -> Auth:
    return build()


async def test_login_opens_a_session_and_its_access_token_verifies(auth: Auth) -> None:
    user_id = await auth.user()
    tokens = await auth.service.login(" ADA@example.org ", PASSWORD, client="c1")
    principal = await auth.verifier.verify_access(tokens.access_token)
    assert principal.user_id == user_id and principal.roles == frozenset({"user"})
    assert await auth.sessions.alive(await auth.family_of(tokens))
    assert tokens.expires_in == 300


async def test_unknown_email_and_wrong_password_get_the_same_answer(auth: Auth) -> None:
    await auth.user()
    for email, password in (("ada@example.org", "wrong password!"), ("bob@x.org", PASSWORD)):
        with pytest.raises(AuthenticationFailed) as refused:
            await auth.service.login(email, password, client="c1")
        assert str(refused.value) == INVALID_CREDENTIALS
    assert auth.limits.failures == {"ada@example.org": 1, "bob@x.org": 1}
    assert auth.sessions.live == {}


async def test_an_account_being_deleted_cannot_log_in(auth: Auth) -> None:
    await auth.user(status=UserStatus.DELETING)
    with pytest.raises(AuthenticationFailed, match="not active"):
        await auth.service.login("ada@example.org", PASSWORD, client="c1")


async def test_an_old_hash_is_replaced_at_login(auth: Auth) -> None:
    old = FakePasswords("fake0")
    user_id = auth.accounts.add_user("ada@example.org", await old.hash(PASSWORD))
    await auth.service.login("ada@example.org", PASSWORD, client="c1")
    stored = auth.accounts.users[user_id].password_hash
    assert not auth.passwords.needs_rehash(stored)
    assert await auth.passwords.verify(stored, PASSWORD)


async def test_refresh_rotates_the_token_pair(auth: Auth) -> None:
    await auth.user()
    first = await auth.service.login("ada@example.org", PASSWORD, client="c1")
    second = await auth.service.refresh(first.refresh_token)
    assert second.refresh_token != first.refresh_token
    assert await auth.family_of(second) == await auth.family_of(first)
    third = await auth.service.refresh(second.refresh_token)
    await auth.verifier.verify_access(third.access_token)


async def test_a_replayed_refresh_token_revokes_the_whole_family(auth: Auth) -> None:
    await auth.user()
    first = await auth.service.login("ada@example.org", PASSWORD, client="c1")
    second = await auth.service.refresh(first.refresh_token)
    with pytest.raises(AuthenticationFailed, match="not valid"):
        await auth.service.refresh(first.refresh_token)  # stolen and replayed
    family = await auth.family_of(first)
    assert not await auth.sessions.alive(family)
    with pytest.raises(AuthenticationFailed):
        await auth.service.refresh(second.refresh_token)  # the thief's pair dies too
    with pytest.raises(AuthenticationFailed):
        await auth.verifier.verify_access(second.access_token)


async def test_a_refresh_after_logout_is_refused(auth: Auth) -> None:
    await auth.user()
    tokens = await auth.service.login("ada@example.org", PASSWORD, client="c1")
    principal = await auth.verifier.verify_access(tokens.access_token)
    await auth.service.logout(principal)
    with pytest.raises(AuthenticationFailed, match="ended"):
        await auth.service.refresh(tokens.refresh_token)
    with pytest.raises(AuthenticationFailed):
        await auth.verifier.verify_access(tokens.access_token)


async def test_an_access_token_is_not_a_refresh_token(auth: Auth) -> None:
    await auth.user()
    tokens = await auth.service.login("ada@example.org", PASSWORD, client="c1")
    with pytest.raises(AuthenticationFailed, match="wrong token type"):
        await auth.service.refresh(tokens.access_token)


async def test_a_concurrent_refresh_within_the_grace_gets_the_same_successor() -> None:
    auth = build(grace_s=10)
    await auth.user()
    first = await auth.service.login("ada@example.org", PASSWORD, client="c1")
    a = await auth.service.refresh(first.refresh_token)
    b = await auth.service.refresh(first.refresh_token)  # a second tab, same moment
    claims = [
        await auth.verifier.decode(t.refresh_token, expected_type=REFRESH) for t in (a, b)
    ]
    assert claims[0]["jti"] == claims[1]["jti"]
    assert await auth.sessions.alive(await auth.family_of(first))
    await auth.service.refresh(a.refresh_token)  # the successor is spent: grace is over
    with pytest.raises(AuthenticationFailed):
        await auth.service.refresh(first.refresh_token)
    assert not await auth.sessions.alive(await auth.family_of(first))
