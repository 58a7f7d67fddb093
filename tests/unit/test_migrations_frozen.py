"""Migrations are frozen DDL: a revision creates what it created the day it was written,
so no migration imports a live model (a table's later change is a later revision)."""

from __future__ import annotations

from pathlib import Path

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
