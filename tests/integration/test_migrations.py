"""The migrated databases are what the models describe: the frozen DDL of every revision,
applied in order, gives the tables the code reads and writes."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from apps.admin.models import metadata as admin_metadata
from apps.auth.audit import metadata as audit_metadata
from apps.auth.models import metadata as auth_metadata
from apps.users.models import metadata as users_metadata
from outbox.schema import metadata as outbox_metadata
from shared.config import Settings
from shared.db import create_engine

MODELS = {
    "authdb": (auth_metadata, audit_metadata),
    "apidb": (users_metadata,),
    "admindb": (admin_metadata,),
}


def _differences(connection: sa.Connection, database: str) -> list[Any]:
    combined = sa.MetaData()
    for source in (*MODELS[database], outbox_metadata):
        for table in source.tables.values():
            table.to_metadata(combined)
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return [diff for diff in compare_metadata(context, combined) if not _expected(diff)]


def _expected(diff: Any) -> bool:
    """Alembic's own table, and indexes the revisions add that the models do not declare
    (the code never names them)."""
    if diff[0] == "remove_table":
        return bool(diff[1].name == "alembic_version")
    return bool(diff[0] == "remove_index")


@pytest.mark.parametrize("database", sorted(MODELS))
async def test_the_migrated_schema_matches_the_models(settings: Settings, database: str) -> None:
    engine = create_engine(settings.database.url(database), pool_size=1)
    try:
        async with engine.connect() as connection:
            differences = await connection.run_sync(_differences, database)
    finally:
        await engine.dispose()
    assert [str(diff) for diff in differences] == []
