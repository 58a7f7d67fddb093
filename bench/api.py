"""Benchmark of the first flow: register -> profile visible, and cached profile reads.

Starts the auth service, the users API, the profiles worker and the relay as processes
against isolated databases, a fresh vhost and its own Redis key prefix, then measures:

* ``profile_visible_ms`` p50/p99: from the register response until the profile row is
  visible in apidb (polled every millisecond; the users API reads that row on a cache
  miss, and a 404 is never cached, so this is when GET /profiles/me starts answering 200);
* ``cached_reads_per_s``: GET /profiles/me with a cached profile, one users API process,
  keep-alive connections from a small raw-socket client.

``python bench/api.py [--quick]``; the last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg
import httpx

from shared.db import asyncpg_dsn
from tests.e2e.stack import Stack, running_stack
from tests.support import isolated_settings

PASSWORD = "bench password that is long enough"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def profile_latencies(stack: Stack, count: int) -> list[float]:
    db = await asyncpg.connect(asyncpg_dsn(stack.settings.database.users_url))
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=stack.auth_url) as client:
        for i in range(count):
            email = f"bench{i}-{uuid.uuid4().hex[:6]}@example.com"
            r = await client.post("/auth/register", json={"email": email, "password": PASSWORD})
            r.raise_for_status()
            registered = time.perf_counter()
            user_id = uuid.UUID(r.json()["user_id"])
            while not await db.fetchval("SELECT 1 FROM profiles WHERE user_id = $1", user_id):
                if time.perf_counter() - registered > 10:
                    raise TimeoutError("profile not created within 10 s")
                await asyncio.sleep(0.001)
            latencies.append((time.perf_counter() - registered) * 1000)
    await db.close()
    return latencies


async def login_with_profile(stack: Stack) -> str:
    email = f"reader-{uuid.uuid4().hex[:6]}@example.com"
    async with httpx.AsyncClient() as client:
        body = {"email": email, "password": PASSWORD}
        (await client.post(f"{stack.auth_url}/auth/register", json=body)).raise_for_status()
        token = (await client.post(f"{stack.auth_url}/auth/login", json=body)).json()[
            "access_token"
        ]
        for _ in range(500):
            r = await client.get(
                f"{stack.users_url}/profiles/me", headers={"Authorization": f"Bearer {token}"}
            )
            if r.status_code == 200:
                return str(token)
            await asyncio.sleep(0.01)
    raise TimeoutError("reader profile never appeared")


async def _reader(host: str, port: int, request: bytes, stop: float, counts: list[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    done = 0
    try:
        while time.perf_counter() < stop:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(head[:80].decode(errors="replace"))
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            done += 1
    finally:
        counts.append(done)
        writer.close()


async def cached_reads(stack: Stack, token: str, seconds: float, connections: int) -> float:
    url = urlsplit(stack.users_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    request = (
        f"GET /profiles/me HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n\r\n"
    ).encode()
    warm: list[int] = []
    await asyncio.gather(
        *(_reader(host, port, request, time.perf_counter() + 1.0, warm) for _ in range(connections))
    )
    counts: list[int] = []
    started = time.perf_counter()
    await asyncio.gather(
        *(_reader(host, port, request, started + seconds, counts) for _ in range(connections))
    )
    return sum(counts) / (time.perf_counter() - started)


def _run_fast(coro: Coroutine[Any, Any, float]) -> float:
    """The load generator shares the machine: give it the cheaper event loop if installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="finish within a minute")
    args = parser.parse_args()
    registrations, seconds = (40, 5.0) if args.quick else (200, 15.0)
    prefix = f"bench{uuid.uuid4().hex[:6]}:"
    with (
        isolated_settings("bench", redis_key_prefix=prefix) as settings,
        running_stack(settings) as stack,
    ):
        latencies = asyncio.run(profile_latencies(stack, registrations))
        print(
            f"register -> profile visible: n={len(latencies)} "
            f"p50={statistics.median(latencies):.1f} ms p99={percentile(latencies, 0.99):.1f} ms"
        )
        token = asyncio.run(login_with_profile(stack))
        rate = _run_fast(cached_reads(stack, token, seconds, connections=32))
        print(f"GET /profiles/me (cached), one users process: {rate:.0f} req/s")
    result = {
        "benchmark": "api",
        "quick": args.quick,
        "registrations": len(latencies),
        "profile_visible_ms_p50": round(statistics.median(latencies), 2),
        "profile_visible_ms_p99": round(percentile(latencies, 0.99), 2),
        "cached_profile_reads_per_s": round(rate),
        "targets": {"profile_visible_ms_p50": "< 50", "cached_profile_reads_per_s": ">= 3000"},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
