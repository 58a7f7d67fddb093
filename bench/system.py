"""System benchmark: register->profile and upload->OCR-completed with every process running.

    python bench/system.py [--quick] [--users N] [--concurrency C] [--documents M]
                           [--sustain 20,30,40]

Starts the auth, users and admin APIs, the profiles and OCR workers and the relay as
processes (``tests/e2e/stack.py``, as a user starts them) against their own databases and
vhost (removed afterwards), on this machine's local PostgreSQL, Redis and RabbitMQ.

1. register->profile: N registrations at concurrency C (default argon2id parameters);
   latency from sending ``POST /auth/register`` to the profile row committed by the worker
   (``profiles.created_at``); throughput in steady state (``register_profile_per_s``:
   profiles created between the 10th and the 90th percentile of their creation times) and
   over the whole run, filling and draining included (``register_profile_overall_per_s``).
2. upload->OCR: M one-page PNG scans uploaded by one user at concurrency 4; latency from
   sending ``POST /documents`` to ``documents.completed_at``. OCR_ENGINE=tesseract: the
   easyocr weights are not on this machine (see docs/ocr.md), so the OCR numbers are
   tesseract's.
3. ``argon2_floor_per_s``: the bare argon2id hash rate of the auth service's own hasher
   (its parameters and its thread for new hashes), measured on the same cores before and
   after each register phase (``--rounds R``: R register phases with a floor between
   each); ``register_over_argon2`` = register->profile per second / the mean of the floors
   right before and after it, the median over the rounds (each round's in
   ``register_over_argon2_rounds``). Registration is
   bound by argon2 by design; the ratio says what everything else costs.
   The sign-up flood guards are lifted (``REGISTER_MAX_PER_CLIENT``,
   ``ARGON2_MAX_PENDING_HASHES``): the load comes from one address, C at a time.
4. ``--sustain R1,R2``: an open-loop offered load of R registrations per second held for
   60 s at each rate (ascending, stopping at the first not held); the backlog (sent minus
   profiles created) is sampled every second. A rate is held when every registration
   succeeds, the backlog stays under two seconds' worth after the first 10 s and ends under
   one second's worth (the relay benchmark's definition). Reports the highest rate held.
5. ``cpu_percent_of_one_core``: % of one core per process group in each floor run and
   in the register phase (the stack's processes, PostgreSQL, RabbitMQ, the neighbours).
   ``cpu``: CPU seconds (utime+stime from /proc/<pid>/stat) each process used in each phase;
   the process whose CPU seconds approach the phase's wall time (1 core = 1.0 per second)
   saturates first. ``saturated_first`` names it per phase.

``--profile DIR`` attaches py-spy to the auth API during the register phase (collapsed
stacks per thread in ``DIR/auth-register.txt``, the top functions printed).

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import asyncpg
import httpx
from PIL import Image, ImageDraw

from apps.auth.passwords import Argon2Passwords
from bench.procstat import CpuPhase
from bench.relay import Profiler
from shared.config import Settings
from shared.db import asyncpg_dsn
from tests.e2e.stack import Stack, running_stack
from tests.support import isolated_settings

PASSWORD = "correct horse battery staple"


def percentile(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def cpu_snapshot(stack: Stack) -> dict[str, float]:
    return {name: stack.cpu_s(name) for name in stack.processes}


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: round(after[name] - before[name], 2) for name in after}


async def wait_rows(url: str, sql: str, expected: int, timeout_s: float) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        deadline = time.monotonic() + timeout_s
        while await conn.fetchval(sql) < expected:
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out waiting for {expected} rows: {sql}")
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


async def register_profile(stack: Stack, users: int, concurrency: int) -> dict[str, object]:
    sent: dict[str, float] = {}
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=stack.auth_url, timeout=60) as client:

        async def one(i: int) -> None:
            async with limit:
                started = time.time()
                r = await client.post("/auth/register", json={
                    "email": f"b{i}-{uuid.uuid4().hex[:6]}@example.com", "password": PASSWORD,
                })
            if r.status_code != 201:
                raise SystemExit(f"register failed: {r.status_code} {r.text}")
            sent[r.json()["user_id"]] = started

        t0 = time.time()
        await asyncio.gather(*(one(i) for i in range(users)))
    url = stack.direct.database.users_url
    await wait_rows(url, "SELECT count(*) FROM profiles", users, 120)
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        rows = await conn.fetch(
            "SELECT user_id::text AS u, extract(epoch FROM created_at) AS t FROM profiles"
        )
    finally:
        await conn.close()
    latencies = [(float(r["t"]) - sent[r["u"]]) * 1000 for r in rows if r["u"] in sent]
    elapsed = max(float(r["t"]) for r in rows) - t0
    # The steady rate: profiles created between the 10th and the 90th percentile of the
    # creation times. Over the whole run the pipeline's filling (the first hash, ~1 s
    # end to end) and draining count as time at a low rate; on a run of a few seconds that
    # was 10-20 % of it, and the floor beside it is a steady rate.
    done = sorted(float(r["t"]) for r in rows)
    first, last = int(len(done) * 0.1), int(len(done) * 0.9)
    steady = (last - first) / max(done[last] - done[first], 1e-9)
    return {
        "register_profile_per_s": round(steady, 1),
        "register_profile_overall_per_s": round(users / elapsed, 1),
        "register_profile_p50_ms": round(percentile(latencies, 50), 1),
        "register_profile_p99_ms": round(percentile(latencies, 99), 1),
        "register_seconds": round(elapsed, 2),
    }


async def argon2_floor(settings: Settings, seconds: float) -> float:
    """Hashes per second of the auth service's own hasher (same parameters, same pool
    size), kept busy with one hash per thread in flight, for ``seconds``."""
    passwords = Argon2Passwords.from_settings(settings.passwords)
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await passwords.hash(PASSWORD)
            done += 1

    started = time.perf_counter()
    try:
        await asyncio.gather(*(worker() for _ in range(ARGON2_THREADS)))
    finally:
        passwords.close()
    return done / (time.perf_counter() - started)


ARGON2_THREADS = 2
"""Hashes kept in flight by the floor. ``Argon2Passwords`` runs new hashes on a thread of
their own (``hash_workers=1``, as in the auth service: sign-ups never take the threads
logins need), so the floor is that one thread's rate, as registration's is."""


async def sustain_register(stack: Stack, rate: int, seconds: float = 60.0) -> dict[str, object]:
    """Offer ``rate`` registrations/s (open loop) for ``seconds``; sample the backlog."""
    db = await asyncpg.connect(asyncpg_dsn(stack.direct.database.users_url))
    base = await db.fetchval("SELECT count(*) FROM profiles")
    sent, failed, backlog = 0, 0, []
    tag = uuid.uuid4().hex[:6]
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=stack.auth_url, timeout=120, limits=limits) as client:

        async def one(i: int) -> None:
            nonlocal failed
            r = await client.post("/auth/register", json={
                "email": f"s{rate}-{tag}-{i}@example.com", "password": PASSWORD,
            })
            failed += r.status_code != 201

        async def sample() -> None:
            while True:
                await asyncio.sleep(1.0)
                done = await db.fetchval("SELECT count(*) FROM profiles") - base
                backlog.append(sent - done)

        sampler = asyncio.create_task(sample())
        tasks, start, total = [], time.perf_counter(), int(rate * seconds)
        for i in range(total):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
            sent += 1
        await asyncio.gather(*tasks)
        sampler.cancel()
    try:
        await wait_rows(stack.direct.database.users_url, "SELECT count(*) FROM profiles",
                        base + total, 120)
    finally:
        await db.close()
    steady = backlog[10:] or backlog
    held = not failed and bool(backlog) and backlog[-1] <= rate and max(steady) <= 2 * rate
    return {"rate": rate, "held": held, "failed": failed, "max_backlog": max(backlog, default=0),
            "final_backlog": backlog[-1] if backlog else None, "backlog_each_s": backlog}


def scan_png(i: int) -> bytes:
    image = Image.new("L", (900, 300), 255)
    draw = ImageDraw.Draw(image)
    for line in range(4):
        draw.text((20, 20 + 60 * line), f"Invoice {i} line {line} total 42.{line}0 EUR", fill=0)
    out = io.BytesIO()
    image.resize((1800, 600)).save(out, format="PNG")
    return out.getvalue()


async def upload_ocr(stack: Stack, documents: int) -> dict[str, object]:
    assert stack.admin_url is not None
    email = f"ocr-{uuid.uuid4().hex[:8]}@example.com"
    async with httpx.AsyncClient(timeout=60) as client:
        r = await client.post(f"{stack.auth_url}/auth/register",
                              json={"email": email, "password": PASSWORD})
        r.raise_for_status()
        tokens = (await client.post(f"{stack.auth_url}/auth/login",
                                    json={"email": email, "password": PASSWORD})).json()
        headers = {"Authorization": f"Bearer {tokens['access_token']}"}
        sent: dict[str, float] = {}
        limit = asyncio.Semaphore(4)
        scans = [scan_png(i) for i in range(documents)]

        async def one(i: int) -> None:
            async with limit:
                started = time.time()
                r = await client.post(f"{stack.admin_url}/documents", headers=headers,
                                      files={"file": (f"scan{i}.png", scans[i], "image/png")})
            if r.status_code != 202:
                raise SystemExit(f"upload failed: {r.status_code} {r.text}")
            sent[r.json()["document_id"]] = started

        t0 = time.time()
        await asyncio.gather(*(one(i) for i in range(documents)))
    url = stack.direct.database.admin_url
    await wait_rows(url, "SELECT count(*) FROM documents WHERE status IN ('completed', 'failed')",
                    documents, 300)
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        rows = await conn.fetch(
            "SELECT id::text AS d, status, extract(epoch FROM completed_at) AS t FROM documents"
        )
    finally:
        await conn.close()
    failed = [r["d"] for r in rows if r["status"] != "completed"]
    if failed:
        raise SystemExit(f"{len(failed)} documents failed OCR")
    latencies = [(float(r["t"]) - sent[r["d"]]) * 1000 for r in rows]
    elapsed = max(float(r["t"]) for r in rows) - t0
    return {
        "ocr_per_min": round(documents / elapsed * 60, 1),
        "upload_ocr_p50_ms": round(percentile(latencies, 50), 1),
        "upload_ocr_p99_ms": round(percentile(latencies, 99), 1),
        "ocr_seconds": round(elapsed, 2),
    }


def phase(stack: Stack, name: str, run: object) -> tuple[dict[str, object], dict[str, float]]:
    before, started = cpu_snapshot(stack), time.monotonic()
    result: dict[str, object] = asyncio.run(run)  # type: ignore[arg-type]
    wall = time.monotonic() - started
    cpu = cpu_delta(before, cpu_snapshot(stack))
    busiest = max(cpu, key=lambda n: cpu[n])
    result[f"{name}_saturated_first"] = f"{busiest} ({cpu[busiest] / wall:.0%} of a core)"
    return result, cpu


@contextmanager
def cpu_groups(
    stack: Stack, settings: Settings, out: dict[str, dict[str, float]], name: str
) -> Iterator[None]:
    """% of one core per process group during a phase (:mod:`bench.procstat`): the stack's
    processes, this benchmark (the client, or the floor's hashing), PostgreSQL, RabbitMQ
    and the neighbours, whose share differs between the floor and the register phase."""
    roles = {name: process.pid for name, process in stack.processes.items()}
    tag = settings.database.auth_url.rsplit("/", 1)[1].rsplit("_", 1)[0]
    with CpuPhase({**roles, "bench (client, floor)": os.getpid()}, tag) as phase:
        yield
    out[name] = phase.percent


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small run, under a minute")
    parser.add_argument("--users", type=int, help="registrations (default 200 quick, 1000)")
    parser.add_argument("--concurrency", type=int, default=16, help="registrations in flight")
    parser.add_argument("--documents", type=int, help="uploads (default 8 quick, 40)")
    parser.add_argument("--sustain", default="", help="registration rates to hold 60 s each")
    parser.add_argument("--profile", type=Path, help="directory for a py-spy profile of auth")
    parser.add_argument("--rounds", type=int, default=1, help="register phases, floors between")
    parser.add_argument("--log-dir", type=Path, help="keep each process's log here")
    args = parser.parse_args()
    users = args.users or (200 if args.quick else 1000)
    documents = args.documents or (8 if args.quick else 40)
    prefix = f"sb{uuid.uuid4().hex[:8]}:"
    with (
        tempfile.TemporaryDirectory() as scratch,
        isolated_settings("sysbench", redis_key_prefix=prefix, ocr_engine="tesseract",
                          upload_max_per_minute=1_000_000, register_max_per_client=1_000_000,
                          argon2_max_pending_hashes=100_000) as settings,
        running_stack(settings, with_admin=True, log_dir=args.log_dir or Path(scratch)) as stack,
    ):
        floor_s = 5.0 if args.quick else 10.0
        groups: dict[str, dict[str, float]] = {}
        with cpu_groups(stack, settings, groups, "argon2 floor 0"):
            floors = [asyncio.run(argon2_floor(settings, floor_s))]
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
        rounds: list[dict[str, object]] = []
        ratios: list[float] = []
        for r in range(args.rounds):
            with (
                Profiler(args.profile if r == 0 else None, "auth-register",
                         stack.processes["auth"].pid, threads=True),
                cpu_groups(stack, settings, groups, f"register {r + 1}"),
            ):
                registered, cpu_register = phase(
                    stack, "register", register_profile(stack, users, args.concurrency)
                )
            with cpu_groups(stack, settings, groups, f"argon2 floor {r + 1}"):
                floors.append(asyncio.run(argon2_floor(settings, floor_s)))
            # Each round beside the floors measured right before and right after it.
            per_s = float(registered["register_profile_per_s"])  # type: ignore[arg-type]
            ratios.append(per_s / statistics.mean(floors[-2:]))
            rounds.append(registered)
            print(f"round {r + 1}: {per_s}/s, floors {floors[-2]:.1f} {floors[-1]:.1f}/s, "
                  f"ratio {ratios[-1]:.3f}", flush=True)
        registered = dict(rounds[0])
        registered["cpu_percent_of_one_core"] = groups
        floor = statistics.median(floors)
        registered["argon2_floor_per_s"] = round(floor, 1)
        registered["argon2_floor_runs"] = [round(f, 1) for f in floors]
        registered["register_profile_per_s_rounds"] = [
            o["register_profile_per_s"] for o in rounds
        ]
        registered["register_over_argon2"] = round(statistics.median(ratios), 3)
        registered["register_over_argon2_rounds"] = [round(q, 3) for q in ratios]
        sustained: list[dict[str, object]] = []
        for rate in [int(r) for r in args.sustain.split(",") if r]:
            sustained.append(asyncio.run(sustain_register(stack, rate)))
            print("sustain: " + json.dumps(sustained[-1]), flush=True)
            if not sustained[-1]["held"]:
                break
        if sustained:
            registered["sustain"] = {
                "highest_held_per_s": max(
                    (int(o["rate"]) for o in sustained if o["held"]),  # type: ignore[call-overload]
                    default=None,
                ),
                "tried": sustained,
            }
        ocr, cpu_ocr = phase(stack, "ocr", upload_ocr(stack, documents))
    result = {
        "users": users, "concurrency": args.concurrency, "documents": documents,
        **registered, **ocr,
        "cpu": {"register_profile": cpu_register, "upload_ocr": cpu_ocr},
        "ocr_engine": "tesseract (easyocr weights not installed here)",
        "cores": 2,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
