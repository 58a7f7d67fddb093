"""End to end through HTTP with real processes, PostgreSQL, Redis and RabbitMQ."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from shared.messaging import H_AGGREGATE_ID, H_CAUSATION_ID, H_CORRELATION_ID
from tests.e2e.stack import Stack, declare_tap, next_tapped, running_stack
from tests.support import isolated_settings

PASSWORD = "correct horse battery staple"
TAP = "e2e.profile_created"
"""A test queue bound to ``profile.created``: what an audit consumer would see."""


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    prefix = f"e{uuid.uuid4().hex[:8]}:"
    with (
        isolated_settings("e2e", roles=True, redis_key_prefix=prefix) as settings,
        running_stack(settings) as running,
    ):
        asyncio.run(declare_tap(settings.broker.url, TAP, "profile.created"))
        yield running


def wait_for_profile(
    stack: Stack, headers: dict[str, str], timeout_s: float = 10.0
) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    while True:
        r = httpx.get(f"{stack.users_url}/profiles/me", headers=headers)
        if r.status_code != 404 or time.monotonic() > deadline:
            return r
        assert "retry-after" in r.headers
        time.sleep(0.02)


def test_register_login_profile_visible_with_correlation(stack: Stack) -> None:
    email = f"e2e{uuid.uuid4().hex[:8]}@example.com"
    r = httpx.post(
        f"{stack.auth_url}/auth/register",
        json={"email": email, "password": PASSWORD, "display_name": "Eve"},
        headers={"X-Correlation-ID": "e2e-corr-1"},
    )
    assert r.status_code == 201
    user_id = r.json()["user_id"]
    assert r.headers["x-correlation-id"] == "e2e-corr-1"
    tokens = httpx.post(
        f"{stack.auth_url}/auth/login", json={"email": email, "password": PASSWORD}
    ).json()
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    profile = wait_for_profile(stack, headers)
    assert profile.status_code == 200
    assert profile.json()["user_id"] == user_id
    assert profile.json()["display_name"] == "Eve"
    # The correlation id travelled HTTP -> authdb outbox -> broker -> worker -> apidb outbox
    # -> broker: the worker's follow-up carries it, and names its cause.
    follow_up = asyncio.run(next_tapped(stack.settings.broker.url, TAP))
    assert follow_up.headers[H_CORRELATION_ID] == "e2e-corr-1"
    assert follow_up.headers[H_CAUSATION_ID]
    assert follow_up.headers[H_AGGREGATE_ID] == user_id


def test_duplicate_malformed_and_token_attacks(stack: Stack) -> None:
    email = f"dup{uuid.uuid4().hex[:8]}@example.com"
    body = {"email": email, "password": PASSWORD}
    assert httpx.post(f"{stack.auth_url}/auth/register", json=body).status_code == 201
    r = httpx.post(f"{stack.auth_url}/auth/register", json=body)
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "conflict"
    r = httpx.post(f"{stack.auth_url}/auth/register", content=b"{not json")
    assert r.status_code in {400, 422}
    assert "error" in r.json()
    tokens = httpx.post(f"{stack.auth_url}/auth/login", json=body).json()
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert wait_for_profile(stack, headers).status_code == 200
    refresh_as_access = {"Authorization": f"Bearer {tokens['refresh_token']}"}
    assert httpx.get(f"{stack.users_url}/profiles/me", headers=refresh_as_access).status_code == 401
    assert httpx.post(f"{stack.auth_url}/auth/logout", headers=headers).status_code == 204
    assert httpx.get(f"{stack.users_url}/profiles/me", headers=headers).status_code == 401
