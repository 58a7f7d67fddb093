"""Steady load from the client host, as users on another machine make it.

``python -m tests.cluster.load --seconds S --out FILE`` (run in the client namespace, so the
APIs are reached by their compose host names) registers users, uploads documents for OCR
and deletes users (each a deletion saga), at fixed rates, until the time is up. Every
request the system **accepted** is one JSON line in ``FILE`` (kind, id, time); refusals and
errors are counted, not retried blindly (a refused request committed nothing). The harness
checks every accepted request's effects afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import time
import uuid
from pathlib import Path
from typing import IO, Any

import httpx
from PIL import Image, ImageDraw

ADMIN = "http://admin:8003"
PASSWORD = "cluster harness password 42"
TIMEOUT = httpx.Timeout(10.0, connect=3.0)


def scan_png(text: str) -> bytes:
    image = Image.new("L", (360, 60), 255)
    ImageDraw.Draw(image).text((10, 20), text, fill=0)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


class Load:
    def __init__(self, out: IO[str], run_id: str, auth: str, ca: str | None) -> None:
        self.out = out
        self.run_id = run_id
        self.auth = auth
        self.http = httpx.AsyncClient(timeout=TIMEOUT, verify=ca or True)
        self.counts: dict[str, int] = {}
        self.uploader: tuple[str, str] | None = None  # (user_id, token)

    def record(self, kind: str, **fields: Any) -> None:
        self.out.write(json.dumps({"kind": kind, "t": time.time(), **fields}) + "\n")
        self.out.flush()

    def count(self, key: str) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1

    async def register(self, tag: str) -> str | None:
        email = f"{tag}-{uuid.uuid4().hex[:12]}@{self.run_id}.example.org"
        try:
            r = await self.http.post(f"{self.auth}/auth/register", json={
                "email": email, "password": PASSWORD, "display_name": tag})
        except httpx.HTTPError:
            self.count("register_error")
            return None
        if r.status_code != 201:
            self.count(f"register_{r.status_code}")
            return None
        user_id = str(r.json()["user_id"])
        self.record("register", id=user_id, email=email)
        self.count("register_ok")
        return email

    async def login(self, email: str) -> tuple[str, str] | None:
        try:
            r = await self.http.post(f"{self.auth}/auth/login",
                                     json={"email": email, "password": PASSWORD})
            if r.status_code != 200:
                self.count(f"login_{r.status_code}")
                return None
            token = r.json()["access_token"]
            me = await self.http.get(f"{self.auth}/auth/me",
                                     headers={"authorization": f"Bearer {token}"})
            return str(me.json()["user_id"]), token
        except (httpx.HTTPError, KeyError, ValueError):
            self.count("login_error")
            return None

    async def upload(self, n: int) -> None:
        if self.uploader is None:
            email = await self.register("uploader")
            self.uploader = await self.login(email) if email else None
            if self.uploader is None:
                return
        user_id, token = self.uploader
        files = {"file": (f"scan-{n}.png", scan_png(f"INVOICE {n} TOTAL {n * 7}"), "image/png")}
        try:
            r = await self.http.post(f"{ADMIN}/documents", files=files,
                                     headers={"authorization": f"Bearer {token}"})
        except httpx.HTTPError:
            self.count("upload_error")
            return
        if r.status_code == 401:
            self.uploader = None
        if r.status_code != 202:
            self.count(f"upload_{r.status_code}")
            return
        self.record("upload", id=str(r.json()["document_id"]), owner=user_id)
        self.count("upload_ok")

    async def delete(self) -> None:
        email = await self.register("leaver")
        session = await self.login(email) if email else None
        if session is None:
            return
        user_id, token = session
        try:
            r = await self.http.delete(f"{self.auth}/auth/users/{user_id}",
                                       headers={"authorization": f"Bearer {token}"})
        except httpx.HTTPError:
            self.count("delete_error")
            return
        if r.status_code != 202:
            self.count(f"delete_{r.status_code}")
            return
        self.record("delete", id=str(r.json()["saga_id"]), user=user_id)
        self.count("delete_ok")


async def every(period: float, until: float, action: Any) -> None:
    n = 0
    tasks: set[asyncio.Task[Any]] = set()
    start = time.monotonic()
    while time.monotonic() < until:
        n += 1
        task = asyncio.create_task(action(n))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        await asyncio.sleep(max(0.0, start + n * period - time.monotonic()))
    if tasks:
        await asyncio.wait(tasks, timeout=30)


async def main(seconds: float, out_path: Path, rates: dict[str, float], run_id: str,
               auth: str, ca: str | None) -> None:
    with out_path.open("a") as out:
        load = Load(out, run_id, auth, ca)
        until = time.monotonic() + seconds
        jobs = []
        if rates["register"] > 0:
            jobs.append(every(1 / rates["register"], until, lambda n: load.register("user")))
        if rates["upload"] > 0:
            jobs.append(every(1 / rates["upload"], until, load.upload))
        if rates["delete"] > 0:
            jobs.append(every(1 / rates["delete"], until, lambda n: load.delete()))
        await asyncio.gather(*jobs)
        await load.http.aclose()
        load.record("summary", counts=load.counts)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--register", type=float, default=4.0, help="registrations per second")
    parser.add_argument("--upload", type=float, default=1.0, help="uploads per second")
    parser.add_argument("--delete", type=float, default=0.2, help="deletions per second")
    parser.add_argument("--run-id", default=uuid.uuid4().hex[:8])
    parser.add_argument("--auth-url", default="http://auth:8002")
    parser.add_argument("--ca", default=None, help="CA bundle the auth API's certificate is from")
    args = parser.parse_args()
    rates = {"register": args.register, "upload": args.upload, "delete": args.delete}
    asyncio.run(main(args.seconds, args.out, rates, args.run_id, args.auth_url, args.ca))


if __name__ == "__main__":
    cli()
