"""Rate limits of the auth API under uvicorn, with concurrent clients: X-Forwarded-For is
believed only from configured proxies; a sign-up flood gets 429 and logins still get through."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
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
        env=env_for(settings, **{"AUTH_PORT": str(port), "LOG_LEVEL": "WARNING",
                                 "LOGIN_MAX_ATTEMPTS_PER_CLIENT": "3",
                                 "REDIS_KEY_PREFIX": f"x{uuid.uuid4().hex[:8]}:", **env}),
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
    """From a peer that is not a configured proxy the header is ignored (uvicorn believed it
    from any loopback peer whatever the deployment said)."""
    with auth_api(settings, TRUSTED_PROXIES="") as url:
        assert _statuses(url) == [401, 401, 401, 429, 429]


def test_a_configured_proxy_is_believed(settings: Settings) -> None:
    with auth_api(settings, TRUSTED_PROXIES="10.9.8.7,127.0.0.1") as url:
        assert _statuses(url) == [401] * 5  # five clients behind the proxy, one try each


def test_a_sign_up_flood_gets_429_and_logins_still_get_through(settings: Settings) -> None:
    """New hashes have a thread of their own and a bounded queue: before, sign-ups and
    logins shared two hashing threads and a flood of sign-ups starved every login."""
    password = "correct horse battery staple"
    with auth_api(settings, ARGON2_MAX_PENDING_HASHES="2", REGISTER_MAX_PER_CLIENT="1000",
                  LOGIN_MAX_ATTEMPTS_PER_CLIENT="1000") as url:
        address = f"owner{uuid.uuid4().hex[:8]}@example.com"
        r = httpx.post(f"{url}/auth/register", json={"email": address, "password": password})
        assert r.status_code == 201, r.text

        async def run() -> tuple[list[int], int, float]:
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                async def sign_up() -> int:
                    body = {"email": f"f{uuid.uuid4().hex[:10]}@example.com",
                            "password": password}
                    return (await client.post("/auth/register", json=body)).status_code

                async def log_in() -> tuple[int, float]:
                    await asyncio.sleep(0.05)  # into the middle of the flood
                    started = asyncio.get_running_loop().time()
                    r = await client.post("/auth/login",
                                          json={"email": address, "password": password})
                    return r.status_code, asyncio.get_running_loop().time() - started

                *flood, (login, took) = await asyncio.gather(
                    *(sign_up() for _ in range(30)), log_in())
                return list(flood), login, took

        flood, login, took = asyncio.run(run())
    print(f"\nsign-up flood: {flood.count(201)} created, {flood.count(429)} x 429; "
          f"login during it: {login} in {took * 1000:.0f} ms")
    assert login == 200
    assert flood.count(429) >= 1 and set(flood) <= {201, 429}


def test_an_attacker_cannot_lock_the_owner_out(settings: Settings) -> None:
    """Failures count per account *and* client: before, ten wrong passwords from anywhere
    locked the real owner out of their account for the window."""
    password = "correct horse battery staple"
    with auth_api(settings, LOGIN_MAX_FAILURES_PER_ACCOUNT="3", LOGIN_DELAY_BASE_S="60") as url:
        owner = f"victim{uuid.uuid4().hex[:8]}@example.com"
        assert httpx.post(f"{url}/auth/register",
                          json={"email": owner, "password": password}).status_code == 201
        attacker = httpx.Client(base_url=url, transport=httpx.HTTPTransport(
            local_address="127.0.0.2"))
        with attacker:
            tries = [attacker.post("/auth/login", json={"email": owner, "password": "guess" * 3}
                                   ).status_code for _ in range(5)]
        assert tries == [401, 401, 401, 429, 429]
        r = httpx.post(f"{url}/auth/login", json={"email": owner, "password": password})
        assert r.status_code == 200, r.text  # the owner, from their own address


def test_failed_logins_make_one_client_wait_longer_and_longer_but_not_the_owner(
    settings: Settings,
) -> None:
    """Growing delays per (account, client) under uvicorn with concurrent clients: an attacker
    on 127.0.0.2 sending ten guesses at once gets three through and then waits 1, 2, 4, 4 s
    (Retry-After, words a person understands); meanwhile the owner signs in from their own
    address, and from the attacker's very address on the device they signed in with before
    (its device token), while that address without the token is told to wait."""
    password = "correct horse battery staple"
    with auth_api(settings, LOGIN_MAX_FAILURES_PER_ACCOUNT="3", LOGIN_DELAY_BASE_S="1",
                  LOGIN_DELAY_MAX_S="4", LOGIN_MAX_ATTEMPTS_PER_CLIENT="1000") as url:
        owner = f"owner{uuid.uuid4().hex[:8]}@example.com"
        assert httpx.post(f"{url}/auth/register",
                          json={"email": owner, "password": password}).status_code == 201
        home = httpx.Client(base_url=url, transport=httpx.HTTPTransport(
            local_address="127.0.0.3"))
        attacker = httpx.Client(base_url=url, transport=httpx.HTTPTransport(
            local_address="127.0.0.2"))
        with home, attacker:
            signed_in = home.post("/auth/login", json={"email": owner, "password": password})
            assert signed_in.status_code == 200, signed_in.text
            device = signed_in.headers["x-device-token"]
            assert device
            # The body is exactly the contract's token pair: the device token is a header.
            assert set(signed_in.json()) == {"access_token", "refresh_token", "token_type",
                                             "expires_in"}

            burst = asyncio.run(_guesses_at_once(url, owner, 10))
            assert sorted(burst) == [401] * 3 + [429] * 7, burst

            waits = []
            for _ in range(4):
                r = attacker.post("/auth/login", json={"email": owner, "password": "guess" * 3})
                assert r.status_code == 429, r.text
                waits.append(int(r.headers["retry-after"]))
                message = r.json()["error"]["message"]
                assert f"wait {waits[-1]} second" in message, message
                if len(waits) < 4:
                    time.sleep(waits[-1])  # waiting as told is admitted, and fails again
                    r = attacker.post("/auth/login",
                                      json={"email": owner, "password": "guess" * 3})
                    assert r.status_code == 401, r.text
            assert waits == [1, 2, 4, 4]

            r = attacker.post("/auth/login", json={"email": owner, "password": password})
            assert r.status_code == 429  # the attacker's address, even with the password
            r = attacker.post("/auth/login", json={"email": owner, "password": password},
                              headers={"X-Device-Token": device})
            assert r.status_code == 200, r.text  # the owner's known device behind that address
            r = home.post("/auth/login", json={"email": owner, "password": password})
            assert r.status_code == 200, r.text


async def _guesses_at_once(url: str, email: str, n: int) -> list[int]:
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    async with httpx.AsyncClient(base_url=url, transport=transport, timeout=30) as client:
        async def guess() -> int:
            body = {"email": email, "password": "guess" * 3}
            return (await client.post("/auth/login", json=body)).status_code

        return list(await asyncio.gather(*(guess() for _ in range(n))))


def test_a_trickled_request_body_gets_408_in_bounded_time(settings: Settings) -> None:
    """A client that sends its headers and then a byte now and then held a request (and
    its connection) for as long as it liked: uvicorn has no body timeout of its own."""
    with auth_api(settings, REQUEST_BODY_TIMEOUT_S="2") as url:
        port = int(url.rsplit(":", 1)[1])
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"POST /auth/login HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
            answer = b""
            for _ in range(20):  # one byte every half second, never finishing
                time.sleep(0.5)
                try:
                    conn.sendall(b" ")
                    conn.settimeout(0.01)
                    answer += conn.recv(4096)
                except (TimeoutError, BlockingIOError):
                    pass
                except OSError:
                    break
                finally:
                    conn.settimeout(10)
                if answer:
                    break
        took = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert took < 5, took
