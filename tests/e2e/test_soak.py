"""Soak: a bounded run (about 75 s) of steady load through every process; memory stays flat.

Load: 10 registrations per second (each one goes auth -> outbox -> relay -> profiles worker ->
apidb) and reads of a profile through the users API. RSS (``VmRSS`` of /proc/<pid>/status)
of each process is sampled every 5 s; after a 20 s warm-up, growth must stay below
``MAX_GROWTH_KIB`` per process.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.stack import Stack, running_stack
from tests.support import isolated_settings

DURATION_S = 75.0
WARM_UP_S = 20.0
RATE = 10
MAX_GROWTH_KIB = 16 * 1024
"""16 MiB after warm-up: allocator noise and caches fit; a per-request leak (≈ 550 requests
after warm-up, ~1,100 HTTP calls) of tens of KiB each would not."""


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with (
        isolated_settings(
            "soak", redis_key_prefix=f"s{uuid.uuid4().hex[:8]}:",
            argon2_memory_kib=1024, argon2_time_cost=1, argon2_allow_weak=True,
            # The load is one client signing people up at RATE/s: past the per-client sign-up
            # limit (tested in tests/e2e/test_auth_limits.py) it would be all 429s.
            register_max_per_client=100_000,
        ) as settings,
        running_stack(settings, log_dir=tmp_path) as running,
    ):
        yield running


async def _load(stack: Stack, samples: dict[str, list[tuple[float, int]]]) -> int:
    async with httpx.AsyncClient(timeout=10) as client:
        body = {"email": f"s{uuid.uuid4().hex}@example.com", "password": "correct horse ok!"}
        await client.post(f"{stack.auth_url}/auth/register", json=body)
        token = (await client.post(f"{stack.auth_url}/auth/login", json=body)).json()
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        # The profile appears once the worker has handled user.registered (404 until then).
        for _ in range(100):
            first = await client.get(f"{stack.users_url}/profiles/me", headers=headers)
            if first.status_code == 200:
                break
            await asyncio.sleep(0.1)
        started = time.monotonic()
        sent, next_sample = 0, 0.0

        async def one() -> None:
            email = f"s{uuid.uuid4().hex}@example.com"
            r = await client.post(f"{stack.auth_url}/auth/register",
                                  json={"email": email, "password": "correct horse ok!"})
            assert r.status_code == 201, r.text
            r = await client.get(f"{stack.users_url}/profiles/me", headers=headers)
            assert r.status_code == 200, r.text

        tasks = []
        while (elapsed := time.monotonic() - started) < DURATION_S:
            if elapsed >= next_sample:
                for name in stack.processes:
                    samples.setdefault(name, []).append((elapsed, stack.rss_kib(name)))
                next_sample += 5.0
            tasks.append(asyncio.create_task(one()))
            sent += 1
            await asyncio.sleep(max(0.0, started + sent / RATE - time.monotonic()))
        await asyncio.gather(*tasks)
        return sent


@pytest.mark.slow
def test_memory_of_every_process_stays_flat(stack: Stack) -> None:
    samples: dict[str, list[tuple[float, int]]] = {}
    sent = asyncio.run(_load(stack, samples))
    assert sent >= RATE * DURATION_S * 0.9
    report = {}
    for name, series in samples.items():
        after = [rss for t, rss in series if t >= WARM_UP_S]
        growth = max(after) - after[0]
        report[name] = (after[0], max(after), growth)
        assert growth < MAX_GROWTH_KIB, f"{name} RSS grew {growth} KiB after warm-up: {series}"
    for name, proc in stack.processes.items():
        assert proc.poll() is None, f"{name} exited"
    print("RSS KiB after warm-up (first, max, growth):", report)
