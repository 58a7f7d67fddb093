"""``amsctl db migrate`` creates the missing databases and migrates them, idempotently."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid

import asyncpg

from shared.config import DATABASES, Settings
from shared.db import asyncpg_dsn, drop_database
from tests.support import POSTGRES, ROOT, env_for


def _amsctl(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "amsctl", *args], cwd=ROOT, env=env_for(settings),
        capture_output=True, text=True, timeout=120, check=False,
    )


async def _tables(url: str) -> set[str]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    finally:
        await conn.close()
    return {r["tablename"] for r in rows}


def test_migrate_creates_databases_and_is_idempotent(settings: Settings) -> None:
    tag = f"ams_mig_{uuid.uuid4().hex[:8]}"
    fresh = settings.replace(
        auth_database_url=f"{POSTGRES}/{tag}_authdb",
        users_database_url=f"{POSTGRES}/{tag}_apidb",
        admin_database_url=f"{POSTGRES}/{tag}_admindb",
    )
    try:
        first = _amsctl(fresh, "db", "migrate")
        assert first.returncode == 0, first.stderr
        assert first.stdout.count("created and migrated") == 3
        second = _amsctl(fresh, "db", "migrate")
        assert second.returncode == 0, second.stderr
        assert "created" not in second.stdout and second.stdout.count("migrated to head") == 3
        tables = {db: asyncio.run(_tables(fresh.database.url(db))) for db in DATABASES}
        assert all({"outbox", "inbox", "alembic_version"} <= t for t in tables.values())
        assert {"users", "sagas"} <= tables["authdb"]
        assert "profiles" in tables["apidb"] and "documents" in tables["admindb"]
    finally:
        for db in DATABASES:
            asyncio.run(drop_database(fresh.database.url(db)))


def test_migrate_names_an_unreachable_database_and_exits_3(settings: Settings) -> None:
    nowhere = settings.replace(auth_database_url="postgresql+asyncpg://postgres@127.0.0.1:1/x")
    result = _amsctl(nowhere, "db", "migrate", "--database", "authdb")
    assert result.returncode == 3
    assert "PostgreSQL is unreachable" in result.stderr
    assert "Traceback" not in result.stderr
