"""The deletion saga end to end over HTTP: real processes for the APIs, relay and workers."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from shared.db import create_engine
from tests.e2e.stack import Stack, running_stack
from tests.saga_support import ROOT, env_for, worker_process
from tests.support import isolated_settings

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with (
        isolated_settings(
            "e2esaga",
            roles=True,  # every process under its least-privilege database role
            redis_key_prefix=f"d{uuid.uuid4().hex[:8]}:",
            worker_retry_delays="200ms,500ms",
            worker_max_attempts=3,
            saga_sweep_interval_s=0.5,
            argon2_time_cost=1, argon2_allow_weak=True,
            argon2_memory_kib=8192,
        ) as settings,
        running_stack(settings) as running,
    ):
        # Besides the stack's profiles worker: the saga's other two participants.
        workers = [worker_process(running.settings, name) for name in ("documents", "saga")]
        try:
            yield running
        finally:
            for worker in workers:
                worker.terminate()
            for worker in workers:
                worker.wait(15)


@pytest.fixture(scope="module")
def admin(stack: Stack) -> dict[str, str]:
    address = f"admin{uuid.uuid4().hex[:8]}@example.com"
    made = subprocess.run(
        [
            sys.executable,
            "-m",
            "amsctl",
            "users",
            "create-admin",
            "--email",
            address,
            "--password-stdin",
        ],
        input=PASSWORD + "\n",
        cwd=ROOT,
        env=env_for(stack.settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    return _login(stack, address)


def _login(stack: Stack, address: str) -> dict[str, str]:
    r = httpx.post(f"{stack.auth_url}/auth/login", json={"email": address, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def _user_with_profile(stack: Stack) -> tuple[str, str, dict[str, str]]:
    address = f"gone{uuid.uuid4().hex[:8]}@example.com"
    r = httpx.post(
        f"{stack.auth_url}/auth/register",
        json={"email": address, "password": PASSWORD, "display_name": "Gone"},
    )
    assert r.status_code == 201, r.text
    headers = _login(stack, address)
    deadline = time.monotonic() + 15
    while httpx.get(f"{stack.users_url}/profiles/me", headers=headers).status_code != 200:
        assert time.monotonic() < deadline, "profile never appeared"
        time.sleep(0.05)
    return address, r.json()["user_id"], headers


def _add_document(stack: Stack, owner: str, *, legal_hold: bool) -> None:
    async def insert() -> None:
        engine = create_engine(stack.settings.database.admin_url, pool_size=1)
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    sa.text(
                        "INSERT INTO documents (id, owner_id, filename, media_type, size_bytes,"
                        " sha256, page_count, status, legal_hold) VALUES (:id, :o, 'a.png',"
                        " 'image/png', 3, 'x', 1, 'completed', :h)"
                    ),
                    {"id": uuid.uuid4(), "o": owner, "h": legal_hold},
                )
        finally:
            await engine.dispose()

    asyncio.run(insert())


def _finished_saga(stack: Stack, saga_id: str, headers: dict[str, str]) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        r = httpx.get(f"{stack.auth_url}/auth/sagas/{saga_id}", headers=headers)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        if body["status"] not in {"running", "compensating"}:
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.1)


def test_delete_user_happy_path(stack: Stack, admin: dict[str, str]) -> None:
    address, user_id, headers = _user_with_profile(stack)
    _add_document(stack, user_id, legal_hold=False)

    r = httpx.delete(f"{stack.auth_url}/auth/users/{user_id}", headers=headers)
    assert r.status_code == 202, r.text
    saga_id = r.json()["saga_id"]
    assert httpx.get(f"{stack.auth_url}/auth/me", headers=headers).status_code == 401

    saga = _finished_saga(stack, saga_id, admin)
    assert saga["status"] == "completed", saga
    assert [s["name"] for s in saga["steps"]] == [
        "profile.delete",
        "documents.delete",
        "user.delete",
    ]
    assert saga["steps"][1]["detail"] == "1 document(s) deleted"
    r = httpx.post(f"{stack.auth_url}/auth/login", json={"email": address, "password": PASSWORD})
    assert r.status_code == 401
    assert httpx.get(f"{stack.users_url}/profiles/{user_id}", headers=admin).status_code == 404


def test_delete_user_under_legal_hold_is_compensated(stack: Stack, admin: dict[str, str]) -> None:
    address, user_id, headers = _user_with_profile(stack)
    _add_document(stack, user_id, legal_hold=True)

    r = httpx.delete(f"{stack.auth_url}/auth/users/{user_id}", headers=admin)  # by an admin
    assert r.status_code == 202, r.text
    saga_id = r.json()["saga_id"]

    assert httpx.get(f"{stack.auth_url}/auth/me", headers=headers).status_code == 401

    saga = _finished_saga(stack, saga_id, admin)
    assert saga["status"] == "compensated", saga
    assert "legal hold" in saga["reason"]
    # The user logs in again and sees their profile and the saga that did not delete them.
    fresh = _login(stack, address)
    r = httpx.get(f"{stack.users_url}/profiles/me", headers=fresh)
    assert r.status_code == 200, r.text
    assert r.json()["display_name"] == "Gone"
    r = httpx.get(f"{stack.auth_url}/auth/sagas/{saga_id}", headers=fresh)
    assert r.json()["status"] == "compensated"
