"""Dependencies going away under a running stack, then coming back.

PostgreSQL "connections dropped mid-stream" and Redis "stopped" are simulated with
:class:`tests.faults.TcpProxy` in front of each for every process: ``cut()`` aborts every
open connection and refuses new ones, ``restore()`` accepts them again. The shared services
are never touched. The APIs must answer with a clear error (503 ``dependency_unavailable``
with ``Retry-After``) or degrade as documented, never hang, and recover by themselves.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.stack import Stack, running_stack, wait_until
from tests.support import isolated_settings

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logs: Path = tmp_path_factory.mktemp("degraded-logs")
    with (
        isolated_settings(
            "degr", redis_key_prefix=f"d{uuid.uuid4().hex[:8]}:",
            argon2_memory_kib=1024, argon2_time_cost=1, argon2_allow_weak=True,
        ) as settings,
        running_stack(settings, proxied=True, log_dir=logs) as running,
    ):
        yield running


def register(stack: Stack) -> httpx.Response:
    email = f"d{uuid.uuid4().hex[:10]}@example.com"
    return httpx.post(f"{stack.auth_url}/auth/register",
                      json={"email": email, "password": PASSWORD}, timeout=15)


def user_with_profile(stack: Stack) -> dict[str, str]:
    email = f"d{uuid.uuid4().hex[:10]}@example.com"
    body = {"email": email, "password": PASSWORD}
    assert httpx.post(f"{stack.auth_url}/auth/register", json=body).status_code == 201
    tokens = httpx.post(f"{stack.auth_url}/auth/login", json=body).json()
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    wait_until(
        lambda: httpx.get(f"{stack.users_url}/profiles/me", headers=headers).status_code == 200,
        15, "profile created",
    )
    return headers


def assert_clear_error(r: httpx.Response) -> None:
    assert r.status_code == 503, (r.status_code, r.text)
    assert r.json()["error"]["code"] == "dependency_unavailable"
    assert "retry-after" in r.headers


def recovers(stack: Stack) -> None:
    """A new registration goes through end to end again, without restarting anything."""
    wait_until(lambda: register(stack).status_code == 201, 30, "registration after recovery")
    user_with_profile(stack)
    for name, proc in stack.processes.items():
        assert proc.poll() is None, f"{name} exited"


def test_postgres_connections_dropped(stack: Stack) -> None:
    headers = user_with_profile(stack)
    stack.proxies["postgres"].cut()
    try:
        started = time.monotonic()
        assert_clear_error(register(stack))
        assert time.monotonic() - started < 15, "the API hung instead of answering"
        ready = httpx.get(f"{stack.auth_url}/ready", timeout=15)
        assert ready.status_code == 503 and ready.json()["checks"]["database"] != "ok"
        # Documented degradation: the users API serves a cached profile (Redis) or says 503.
        r = httpx.get(f"{stack.users_url}/profiles/me", headers=headers, timeout=15)
        if r.status_code != 200:
            assert_clear_error(r)
    finally:
        stack.proxies["postgres"].restore()
    recovers(stack)


def test_redis_stopped(stack: Stack) -> None:
    headers = user_with_profile(stack)
    stack.proxies["redis"].cut()
    try:
        # Token checks need the denylist in Redis: 503, never a silent pass.
        assert_clear_error(
            httpx.get(f"{stack.users_url}/profiles/me", headers=headers, timeout=15)
        )
        ready = httpx.get(f"{stack.users_url}/ready", timeout=15)
        assert ready.status_code == 503 and ready.json()["checks"]["redis"] != "ok"
    finally:
        stack.proxies["redis"].restore()
    wait_until(
        lambda: httpx.get(f"{stack.users_url}/profiles/me", headers=headers).status_code == 200,
        20, "profile readable after Redis is back",
    )
    recovers(stack)
