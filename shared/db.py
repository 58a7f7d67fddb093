"""Async SQLAlchemy engine and session helpers, plus a few PostgreSQL administration calls."""

from __future__ import annotations

import asyncpg
from sqlalchemy.engine import make_url
from sqlalchemy.ext import asyncio as sa_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared.tls import postgres_connect_args


def create_engine(
    url: str, *, pool_size: int = 10, echo: bool = False, pre_ping: bool = True
) -> AsyncEngine:
    """An asyncpg-backed engine; ``pool_pre_ping`` lets pools survive a database restart.

    ``pre_ping=False`` saves a round trip per transaction for callers that retry a unit
    of work which failed on a dead connection (the pool is invalidated then). libpq's TLS
    parameters in ``url`` (``sslmode=verify-full&sslrootcert=...``) become asyncpg's ``ssl``.
    """
    url, connect_args = postgres_connect_args(url)
    # Looked up on the module when called: with tracing on (shared.tracing), the
    # SQLAlchemy instrumentation has wrapped it to record every statement.
    return sa_asyncio.create_async_engine(
        url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=pre_ping, echo=echo,
        connect_args=connect_args,
    )


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def asyncpg_dsn(url: str) -> str:
    """The plain ``postgresql://`` DSN asyncpg expects, from a SQLAlchemy URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def database_name(url: str) -> str:
    name = make_url(url).database
    if not name:
        raise ValueError(f"database URL {make_url(url)!r} names no database")
    return name


async def ensure_database(url: str, owner: str = "") -> bool:
    """Create the database named in ``url`` if it is missing (owned by ``owner`` when
    given). Returns True if created."""
    admin = make_url(url).set(drivername="postgresql", database="postgres")
    name = database_name(url)
    conn = await asyncpg.connect(admin.render_as_string(hide_password=False))
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists:
            return False
        try:
            owned = ' OWNER "' + owner.replace('"', '""') + '"' if owner else ""
            await conn.execute(f'CREATE DATABASE "{_ident(name)}"{owned}')
        except asyncpg.DuplicateDatabaseError:
            return False  # created concurrently by another process
        return True
    finally:
        await conn.close()


async def drop_database(url: str) -> None:
    """Drop the database named in ``url`` (tests only), disconnecting its sessions."""
    admin = make_url(url).set(drivername="postgresql", database="postgres")
    conn = await asyncpg.connect(admin.render_as_string(hide_password=False))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{_ident(database_name(url))}" WITH (FORCE)')
    finally:
        await conn.close()


def _ident(name: str) -> str:
    if not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"refusing unusual database name {name!r}")
    return name
