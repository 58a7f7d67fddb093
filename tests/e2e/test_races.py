"""Concurrency claims of the auth service, against a real server (uvicorn in its own process)
with many requests in flight at once. An in-process test client handles one request at a time,
so the same claims tested through it never raced.

Each test opens its connections first, then releases every request together and checks that
they really overlapped (the last one started before the first one finished).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import jwt
import pytest
import sqlalchemy as sa

from shared.config import Settings
from shared.db import create_engine
from tests.live import live_api
from tests.support import isolated_settings

PASSWORD = "correct horse battery staple"
GRACE_S = 4.0
AT_ONCE = 12


@pytest.fixture(scope="module")
def auth_settings() -> Iterator[Settings]:
    with isolated_settings(
        "race",
        redis_key_prefix=f"r{uuid.uuid4().hex[:8]}:",
        refresh_reuse_grace_s=GRACE_S,
        # All AT_ONCE sign-ups must reach the uniqueness check: past the pending-hash bound
        # the flood guard answers 429 first (tests/e2e/test_auth_limits.py covers that).
        argon2_max_pending_hashes=AT_ONCE,
        log_level="WARNING",
    ) as s:
        yield s


@pytest.fixture(scope="module")
def auth_url(auth_settings: Settings) -> Iterator[str]:
    with live_api(auth_settings, "auth") as url:
        yield url


async def at_once(
    url: str, n: int, request: Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]
) -> list[httpx.Response]:
    """``n`` requests, each on its own open connection, released together; asserts overlap."""
    clients = [httpx.AsyncClient(base_url=url, timeout=30) for _ in range(n)]
    try:
        await asyncio.gather(*(c.get("/health") for c in clients))  # connections open
        go = asyncio.Event()
        spans: list[tuple[float, float]] = []

        async def one(client: httpx.AsyncClient) -> httpx.Response:
            await go.wait()
            start = time.monotonic()
            response = await request(client)
            spans.append((start, time.monotonic()))
            return response

        tasks = [asyncio.create_task(one(c)) for c in clients]
        await asyncio.sleep(0.05)
        go.set()
        responses = await asyncio.gather(*tasks)
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    assert max(s for s, _ in spans) < min(e for _, e in spans), "the requests did not overlap"
    return responses


def email() -> str:
    return f"race.{uuid.uuid4().hex[:10]}@example.com"


async def signed_in(url: str) -> dict[str, Any]:
    address = email()
    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        r = await c.post("/auth/register", json={"email": address, "password": PASSWORD})
        assert r.status_code == 201, r.text
        r = await c.post("/auth/login", json={"email": address, "password": PASSWORD})
        assert r.status_code == 200, r.text
        return dict(r.json())


async def refresh(url: str, token: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        return await c.post("/auth/refresh", json={"refresh_token": token})


async def me(url: str, access_token: str) -> int:
    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        r = await c.get("/auth/me", headers={"Authorization": f"Bearer {access_token}"})
        return r.status_code


def jti(token: str) -> str:
    return str(jwt.decode(token, options={"verify_signature": False})["jti"])


async def test_one_email_registered_at_once_is_one_201_and_the_rest_409(
    auth_url: str, auth_settings: Settings
) -> None:
    address = email()
    payload = {"email": address, "password": PASSWORD}
    responses = await at_once(
        auth_url, AT_ONCE, lambda c: c.post("/auth/register", json=payload)
    )
    codes = sorted(r.status_code for r in responses)
    assert codes == [201] + [409] * (AT_ONCE - 1), codes
    assert all(r.json()["error"]["code"] == "conflict" for r in responses if r.status_code == 409)
    engine = create_engine(auth_settings.database.auth_url, pool_size=1)
    async with engine.connect() as conn:
        users = await conn.scalar(
            sa.text("SELECT count(*) FROM users WHERE email = :e"), {"e": address}
        )
        events = await conn.scalar(
            sa.text(
                "SELECT count(*) FROM outbox WHERE event_type = 'user.registered' "
                "AND payload->>'email' = :e"
            ),
            {"e": address},
        )
    await engine.dispose()
    assert (users, events) == (1, 1)


async def test_refreshes_sent_at_once_keep_the_client_signed_in(auth_url: str) -> None:
    tokens = await signed_in(auth_url)
    responses = await at_once(
        auth_url, AT_ONCE,
        lambda c: c.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]}),
    )
    assert [r.status_code for r in responses] == [200] * AT_ONCE, [r.text for r in responses]
    # Every answer carries the one successor: the family still has a single live token.
    successors = {jti(r.json()["refresh_token"]) for r in responses}
    assert len(successors) == 1
    assert successors != {jti(tokens["refresh_token"])}
    assert all([await me(auth_url, r.json()["access_token"]) == 200 for r in responses])
    # The client goes on with any of the answers it got.
    nxt = await refresh(auth_url, responses[-1].json()["refresh_token"])
    assert nxt.status_code == 200, nxt.text
    assert await me(auth_url, nxt.json()["access_token"]) == 200


async def test_a_spent_token_reused_after_the_grace_revokes_the_family(auth_url: str) -> None:
    tokens = await signed_in(auth_url)
    first = await refresh(auth_url, tokens["refresh_token"])
    assert first.status_code == 200
    await asyncio.sleep(GRACE_S + 0.5)
    reuse = await refresh(auth_url, tokens["refresh_token"])
    assert reuse.status_code == 401
    # The whole family is gone: the successor and the access tokens of the session.
    assert (await refresh(auth_url, first.json()["refresh_token"])).status_code == 401
    assert await me(auth_url, first.json()["access_token"]) == 401


async def test_reuse_after_the_successor_was_spent_revokes_even_within_the_grace(
    auth_url: str,
) -> None:
    tokens = await signed_in(auth_url)
    second = await refresh(auth_url, tokens["refresh_token"])
    third = await refresh(auth_url, second.json()["refresh_token"])
    assert (second.status_code, third.status_code) == (200, 200)
    # The client has moved on; the first token again means someone else holds it.
    assert (await refresh(auth_url, tokens["refresh_token"])).status_code == 401
    assert (await refresh(auth_url, third.json()["refresh_token"])).status_code == 401
    assert await me(auth_url, third.json()["access_token"]) == 401
