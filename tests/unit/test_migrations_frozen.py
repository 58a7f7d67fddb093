"""Migrations are frozen DDL: a revision creates what it created the day it was written,
so no migration imports a live model (a table's later change is a later revision)."""

from __future__ import annotations

from pathlib import Path

from migrations import outbox_ddl
from outbox.schema import NOTIFIER_LOCK, NOTIFY_CHANNEL
from tests.unit.test_ownership import imports_of

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
ALLOWED = ("alembic", "sqlalchemy", "migrations", "__future__")


def test_no_migration_imports_live_code() -> None:
    revisions = [*MIGRATIONS.glob("*/versions/*.py"), MIGRATIONS / "outbox_ddl.py"]
    assert len(revisions) > 3
    offending = {
        f"{path.relative_to(MIGRATIONS)}: {name}"
        for path in revisions
        for name in imports_of(path)
        if name.split(".")[0] not in ALLOWED
    }
    assert offending == set()


def test_the_trigger_tries_the_notifier_lock_the_relay_documents() -> None:
    classid, key = NOTIFIER_LOCK
    for trigger in (outbox_ddl._SINGLE_NOTIFIER, outbox_ddl._NOTIFY_AT_COMMIT[0]):
        assert f"pg_try_advisory_xact_lock({classid}, {key})" in trigger
        assert f"pg_notify('{NOTIFY_CHANNEL}', '')" in trigger
