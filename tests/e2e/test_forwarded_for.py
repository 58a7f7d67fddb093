"""X-Forwarded-For is believed only from configured proxies (auth API under uvicorn)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from shared.config import Settings
from tests.e2e.stack import wait_until
from tests.support import env_for, free_port, isolated_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def settings() -> Iterator[Settings]:
    with isolated_settings("xff") as s:
        yield s


@contextmanager
def auth_api(settings: Settings, **env: str) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "apps.auth"], cwd=ROOT,
        env=env_for(settings, AUTH_PORT=str(port), LOG_LEVEL="WARNING",
                    LOGIN_MAX_ATTEMPTS_PER_CLIENT="3",
                    REDIS_KEY_PREFIX=f"x{uuid.uuid4().hex[:8]}:", **env),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _up(url), 60, "auth /ready")
        yield url
    finally:
        process.terminate()
        process.wait(15)


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _statuses(url: str) -> list[int]:
    """Five wrong logins from this host, each claiming another client address."""
    return [
        httpx.post(f"{url}/auth/login", json={"email": "nobody@example.com", "password": "x" * 9},
                   headers={"X-Forwarded-For": f"203.0.113.{n}"}).status_code
        for n in range(5)
    ]


def test_a_forged_forwarded_for_buys_no_fresh_rate_limit_bucket(settings: Settings) -> None:
    with auth_api(settings) as url:
        assert _statuses(url) == [401, 401, 401, 429, 429]


def test_a_configured_proxy_is_believed(settings: Settings) -> None:
    with auth_api(settings, TRUSTED_PROXIES="127.0.0.1") as url:
        assert _statuses(url) == [401] * 5  # five clients behind the proxy, one try each
