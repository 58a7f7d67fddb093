"""Create missing databases and migrate them to head, idempotently."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config

from migrations.grants import grant_tables, secure_database
from migrations.roles import RolePlan, ensure_roles, plan_roles
from shared.config import DATABASES, Settings
from shared.db import asyncpg_dsn, ensure_database

SCRIPTS = Path(__file__).resolve().parent


def alembic_config(database: str, url: str, role: str = "") -> Config:
    """The Config of one database's migrations; ``role``: run them as that role (its
    objects then belong to it), through the connection's ``role`` parameter."""
    if database not in DATABASES:
        raise ValueError(f"unknown database {database!r}")
    config = Config()
    config.set_main_option("script_location", str(SCRIPTS / database))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["role"] = role
    return config


@dataclass
class Migrated:
    created: dict[str, bool] = field(default_factory=dict)
    """{database: created by this run}"""
    role_changes: list[str] = field(default_factory=list)
    """Roles created or corrected, grants and revokes made (empty: none needed)."""
    roles: RolePlan | None = None


def migrate(settings: Settings, databases: tuple[str, ...] = DATABASES) -> Migrated:
    """Create (if missing) and upgrade each database; with ``MIGRATE_DATABASE_URL``, also
    the least-privilege roles and grants (:mod:`migrations.roles`)."""
    plan = plan_roles(settings.database)
    done = Migrated(roles=plan)
    if plan is None:
        for database in databases:
            url = settings.database.url(database)
            done.created[database] = asyncio.run(ensure_database(url))
            command.upgrade(alembic_config(database, url), "head")
        return done
    done.role_changes += asyncio.run(_ensure_roles(plan))
    for database in databases:
        url = plan.admin_url_for(database)
        done.created[database] = asyncio.run(ensure_database(url, owner=plan.owner))
        done.role_changes += asyncio.run(secure_database(plan, database))
        command.upgrade(alembic_config(database, url, role=plan.owner), "head")
        done.role_changes += asyncio.run(grant_tables(plan, database))
    return done


async def _ensure_roles(plan: RolePlan) -> list[str]:
    conn = await asyncpg.connect(asyncpg_dsn(plan.admin_url))
    try:
        return await ensure_roles(conn, plan)
    finally:
        await conn.close()
