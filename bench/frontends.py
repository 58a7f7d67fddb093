"""Page response times of the portal and the console under the system's normal load.

    python bench/frontends.py [--quick] [--people N] [--rounds R] [--load-rate R]

Starts every process as a user starts them (``tests/e2e/stack.py`` with the frontends) on
their own databases and vhost (removed afterwards), then:

1. **Normal load** in the background for the whole measurement: new people registering and
   uploading one-page scans through the APIs (``--load-rate`` registrations per second, one
   upload each, OCR with tesseract), so the relay, the workers, PostgreSQL and Redis are busy
   as in ordinary use.
2. **Pages**: ``--people`` signed-in people each fetch every page ``--rounds`` times (the
   server's response time: request sent to last byte received, no browser rendering). Portal:
   ``/documents``, ``/documents/{id}`` (with its OCR lines), ``/profile``, ``/account``,
   ``/documents/rows`` (the live fragment); console (one admin): ``/``, ``/documents``,
   ``/sagas``, ``/dead-letters``, ``/outbox``, ``/audit``.
3. **Floors, same run, same load**: each portal page beside the API call it is built on,
   made directly with the same person's token (``GET /documents``, ``GET /documents/{id}``,
   ``GET /profiles/me``), and every frontend's ``/health`` (the bare HTTP round trip).
   ``over_api`` = page p50 / its API call's p50: what the frontend adds (session, template).

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx
from PIL import Image, ImageDraw, ImageFont

from tests.e2e.stack import Stack, running_stack
from tests.support import env_for, isolated_settings

PASSWORD = "correct horse battery staple"
LIMITS = httpx.Limits(keepalive_expiry=2.0)
"""Below uvicorn's 5 s keep-alive, as the frontends' own API client does."""
ADMIN = ("bench-admin@example.org", "bench admin password 1")


def scan_png(label: str) -> bytes:
    image = Image.new("RGB", (900, 300), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=36)
    for row, text in enumerate((f"Invoice {label}", "Total due: 1,250 EUR")):
        draw.text((40, 40 + row * 100), text, fill="black", font=font)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def pct(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def summary(ms: list[float]) -> dict[str, float]:
    return {"n": len(ms), "p50_ms": round(pct(ms, 50), 1), "p95_ms": round(pct(ms, 95), 1),
            "max_ms": round(max(ms), 1) if ms else 0.0}


async def timed(call: Callable[[], Awaitable[httpx.Response]], into: list[float]) -> None:
    started = time.perf_counter()
    response = await call()
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise RuntimeError(f"{response.request.url} answered {response.status_code}")
    into.append(elapsed)


async def sign_in(client: httpx.AsyncClient, email: str, password: str) -> None:
    page = await client.get("/login")
    token = re.search(r'name="_csrf" value="([^"]+)"', page.text)
    assert token, "no CSRF token on the sign-in page"
    answer = await client.post("/login", data={"_csrf": token.group(1), "email": email,
                                               "password": password})
    if answer.status_code != 303:
        raise RuntimeError(f"sign-in failed: {answer.status_code}")


async def api_login(stack: Stack, email: str) -> dict[str, str]:
    async with httpx.AsyncClient(base_url=stack.auth_url, timeout=30, limits=LIMITS) as auth:
        await auth.post("/auth/register", json={"email": email, "password": PASSWORD})
        tokens = (await auth.post("/auth/login", json={"email": email, "password": PASSWORD}
                                  )).json()
    return {"Authorization": f"Bearer {tokens['access_token']}"}


async def background_load(stack: Stack, rate: float, stop: asyncio.Event,
                          counts: dict[str, int]) -> None:
    """People registering and uploading a scan each, ``rate`` per second, until ``stop``."""
    assert stack.admin_url is not None

    async def one(n: int) -> None:
        email = f"load.{n}.{uuid.uuid4().hex[:6]}@example.org"
        try:
            bearer = await api_login(stack, email)
            async with httpx.AsyncClient(base_url=stack.admin_url, timeout=30,
                                         limits=LIMITS) as admin:
                await admin.post("/documents", headers=bearer,
                                 files={"file": ("scan.png", scan_png(str(n)), "image/png")})
            counts["ok"] += 1
        except httpx.HTTPError:
            counts["failed"] += 1

    tasks: set[asyncio.Task[None]] = set()
    n = 0
    while not stop.is_set():
        task = asyncio.create_task(one(n))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        n += 1
        await asyncio.sleep(1 / rate)
    await asyncio.gather(*tasks)


async def portal_person(stack: Stack, rounds: int, results: dict[str, list[float]]) -> None:
    assert stack.portal_url is not None
    assert stack.admin_url is not None
    email = f"bench.{uuid.uuid4().hex[:10]}@example.org"
    bearer = await api_login(stack, email)
    async with (
        httpx.AsyncClient(base_url=stack.portal_url, timeout=30, limits=LIMITS) as portal,
        httpx.AsyncClient(base_url=stack.admin_url, timeout=30, limits=LIMITS) as admin,
        httpx.AsyncClient(base_url=stack.users_url, timeout=30, limits=LIMITS) as users,
    ):
        await sign_in(portal, email, PASSWORD)
        uploaded = await admin.post("/documents", headers=bearer,
                                    files={"file": ("mine.png", scan_png(email), "image/png")})
        if uploaded.status_code != 202:
            raise RuntimeError(f"upload: {uploaded.status_code} {uploaded.text[:300]}")
        doc = uploaded.json()
        for _ in range(300):  # its OCR result, so the document page has lines to draw
            polled = await admin.get(f"/documents/{doc['document_id']}", headers=bearer)
            if polled.status_code != 200:
                print(f"poll: {polled.status_code} {polled.text[:200]}", file=sys.stderr)
            elif polled.json()["status"] in ("completed", "failed"):
                break
            await asyncio.sleep(0.2)
        doc_path = f"/documents/{doc['document_id']}"
        pages = {
            "portal /documents": lambda: portal.get("/documents"),
            "portal /documents/{id}": lambda: portal.get(doc_path),
            "portal /profile": lambda: portal.get("/profile"),
            "portal /account": lambda: portal.get("/account"),
            "portal /documents/rows (live)": lambda: portal.get("/documents/rows",
                                                                headers={"X-Live": "1"}),
            "api GET /documents": lambda: admin.get("/documents", headers=bearer,
                                                    params={"limit": 50}),
            "api GET /documents/{id}": lambda: admin.get(doc_path, headers=bearer),
            "api GET /profiles/me": lambda: users.get("/profiles/me", headers=bearer),
            "portal /health": lambda: portal.get("/health"),
        }
        for _ in range(rounds):
            for name, call in pages.items():
                await timed(call, results.setdefault(name, []))


async def console_admin(stack: Stack, rounds: int, results: dict[str, list[float]]) -> None:
    assert stack.console_url is not None
    async with httpx.AsyncClient(base_url=stack.console_url, timeout=60, limits=LIMITS) as console:
        await sign_in(console, *ADMIN)
        paths = ["/", "/documents", "/sagas", "/dead-letters", "/outbox", "/audit", "/health"]
        for _ in range(rounds):
            for path in paths:
                await timed(lambda p=path: console.get(p), results.setdefault(
                    f"console {path}", []))


async def measure(stack: Stack, args: argparse.Namespace) -> dict[str, object]:
    stop = asyncio.Event()
    counts = {"ok": 0, "failed": 0}
    load = asyncio.create_task(background_load(stack, args.load_rate, stop, counts))
    await asyncio.sleep(3)  # the load is running before the first page is timed
    results: dict[str, list[float]] = {}
    started = time.monotonic()
    await asyncio.gather(
        *(portal_person(stack, args.rounds, results) for _ in range(args.people)),
        console_admin(stack, max(1, args.rounds // 2), results),
    )
    elapsed = time.monotonic() - started
    stop.set()
    await load
    pages = {name: summary(ms) for name, ms in sorted(results.items())}
    floors = {"portal /documents": "api GET /documents",
              "portal /documents/{id}": "api GET /documents/{id}",
              "portal /profile": "api GET /profiles/me"}
    over_api = {page: round(pages[page]["p50_ms"] / pages[api]["p50_ms"], 2)
                for page, api in floors.items()}
    return {"bench": "frontends", "people": args.people, "rounds": args.rounds,
            "loadavg_1m_end": round(os.getloadavg()[0], 1), "cpus": os.cpu_count(),
            "load": {"registrations_uploads_per_s": args.load_rate, **counts,
                     "seconds": round(elapsed, 1)},
            "pages": pages, "over_api_p50": over_api}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 people, 5 rounds")
    parser.add_argument("--people", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--load-rate", type=float, default=1.0,
                        help="background registrations (+1 upload each) per second")
    args = parser.parse_args()
    if args.quick:
        args.people, args.rounds = 2, 5
    with (
        tempfile.TemporaryDirectory() as logs,
        isolated_settings("benchfe", redis_key_prefix=f"bfe{uuid.uuid4().hex[:6]}:") as s,
        running_stack(s, with_frontends=True, log_dir=Path(logs),
                      # every load user logs in from this one address
                      env={"OCR_ENGINE": "tesseract",
                           "LOGIN_MAX_ATTEMPTS_PER_CLIENT": "1000000"}) as stack,
    ):
        subprocess.run([sys.executable, "-m", "amsctl", "users", "create-admin", "--email",
                        ADMIN[0], "--password-stdin"], input=f"{ADMIN[1]}\n", text=True,
                       cwd=ROOT, check=True, env=env_for(stack.settings), capture_output=True)
        result = asyncio.run(measure(stack, args))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
