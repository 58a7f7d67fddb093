"""Create missing databases and migrate them to head, idempotently."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config

from shared.config import DATABASES, Settings
from shared.db import ensure_database

SCRIPTS = Path(__file__).resolve().parent


def alembic_config(database: str, url: str) -> Config:
    if database not in DATABASES:
        raise ValueError(f"unknown database {database!r}")
    config = Config()
    config.set_main_option("script_location", str(SCRIPTS / database))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(settings: Settings, databases: tuple[str, ...] = DATABASES) -> dict[str, bool]:
    """Create (if missing) and upgrade each database. Returns {database: created}."""
    created: dict[str, bool] = {}
    for database in databases:
        url = settings.database_url(database)
        created[database] = asyncio.run(ensure_database(url))
        command.upgrade(alembic_config(database, url), "head")
    return created
