"""Every process of the system runs under its least-privilege database role and still does
its work: sign-up (auth API -> authdb outbox -> relay -> profiles worker -> apidb), an upload
OCRed (admin API -> admindb outbox -> relay -> OCR worker), a legal hold recorded in the
audit trail (audit role), the console ready; and no process connects as a superuser.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import asyncpg
import httpx
import pytest

from shared.db import asyncpg_dsn, database_name
from shared.db_url import url_user
from tests.documents_support import text_page_png
from tests.e2e.stack import ROOT, Stack, running_stack, wait_until
from tests.support import POSTGRES, env_for, isolated_settings

pytestmark = pytest.mark.timeout(300)

PASSWORD = "correct horse battery staple"
ADMIN = ("operator@example.org", "operator password 1")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with (
        isolated_settings("lp", roles=True, redis_key_prefix=f"lp{uuid.uuid4().hex[:8]}:",
                          argon2_time_cost=1, argon2_allow_weak=True,
                          argon2_memory_kib=8192) as settings,
        running_stack(settings, with_frontends=True, log_dir=tmp_path_factory.mktemp("logs"),
                      env={"OCR_ENGINE": "tesseract"}) as running,
    ):
        made = subprocess.run(
            [sys.executable, "-m", "amsctl", "users", "create-admin", "--email", ADMIN[0],
             "--password-stdin"], input=f"{ADMIN[1]}\n", text=True, cwd=ROOT,
            env=env_for(running.settings), capture_output=True, timeout=60, check=False,
        )
        assert made.returncode == 0, made.stderr
        yield running


def _login(stack: Stack, email: str, password: str) -> dict[str, str]:
    r = httpx.post(f"{stack.auth_url}/auth/login", json={"email": email, "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def test_every_process_works_under_its_role_and_none_is_a_superuser(stack: Stack) -> None:
    assert stack.admin_url is not None and stack.console_url is not None
    email = f"lp{uuid.uuid4().hex[:8]}@example.com"
    r = httpx.post(f"{stack.auth_url}/auth/register",
                   json={"email": email, "password": PASSWORD, "display_name": "Lea"})
    assert r.status_code == 201, r.text
    user = _login(stack, email, PASSWORD)
    wait_until(lambda: httpx.get(f"{stack.users_url}/profiles/me", headers=user)
               .status_code == 200, 20, "the profile (profiles worker, users role)")

    page = text_page_png(["Least privilege"])
    r = httpx.post(f"{stack.admin_url}/documents", headers=user,
                   files={"file": ("page", page, "image/png")}, timeout=30)
    assert r.status_code == 202, r.text
    document = f"{stack.admin_url}{r.headers['location']}"
    wait_until(lambda: httpx.get(document, headers=user).json().get("status") == "completed",
               90, "the OCR result (OCR worker, admin role)", interval_s=0.5)

    admin = _login(stack, *ADMIN)
    r = httpx.put(f"{document}/legal-hold", headers=admin, json={"legal_hold": True})
    assert r.status_code == 200, r.text
    assert httpx.get(f"{stack.console_url}/ready").status_code == 200

    sessions = asyncio.run(_sessions(stack))
    roles = {db: url_user(stack.direct.database.url(db)) for db in ("authdb", "apidb", "admindb")}
    audit = url_user(stack.direct.database.audit_url)
    assert sessions, "no process holds a database connection"
    assert all(not superuser for _, _, superuser in sessions), sessions
    allowed = {(roles["authdb"], "authdb"), (audit, "authdb"), (roles["apidb"], "apidb"),
               (roles["admindb"], "admindb")}
    seen = {(user_name, db) for user_name, db, _ in sessions}
    assert seen <= allowed, seen - allowed
    assert {(roles[db], db) for db in roles} <= seen  # the relay and the APIs at least
    assert (audit, "authdb") in seen  # the admin API's audit trail

    async def audited() -> int:
        conn = await asyncpg.connect(asyncpg_dsn(stack.direct.database.audit_url))
        try:
            return int(await conn.fetchval(
                "SELECT count(*) FROM operator_audit WHERE action = 'documents.legal-hold'"))
        finally:
            await conn.close()

    assert asyncio.run(audited()) >= 1
    for name, process in stack.processes.items():
        assert process.poll() is None, f"{name} exited: {stack.log_text(name)[-2000:]}"


async def _sessions(stack: Stack) -> list[tuple[str, str, bool]]:
    """(user, logical database, superuser) of every client connection to the stack's
    databases, seen by the test's superuser."""
    names = {database_name(stack.direct.database.url(db)): db
             for db in ("authdb", "apidb", "admindb")}
    conn = await asyncpg.connect(asyncpg_dsn(f"{POSTGRES}/postgres"))
    try:
        deadline = time.monotonic() + 5
        rows: list[asyncpg.Record] = []
        while not rows and time.monotonic() < deadline:
            rows = await conn.fetch(
                "SELECT a.usename, a.datname, r.rolsuper FROM pg_stat_activity a "
                "JOIN pg_roles r ON r.oid = a.usesysid WHERE a.datname = ANY($1::text[]) "
                "AND a.backend_type = 'client backend'", list(names))
            await asyncio.sleep(0.2)
    finally:
        await conn.close()
    return [(r["usename"], names[r["datname"]], r["rolsuper"]) for r in rows]
