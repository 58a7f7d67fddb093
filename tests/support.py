"""Isolation for tests that use the real services: own databases, own vhost, cleaned up.

The local services come from the environment (``TEST_POSTGRES_URL``, ``TEST_RABBITMQ_URL``,
``TEST_RABBITMQ_MANAGEMENT_URL``, ``TEST_REDIS_URL``) with localhost defaults.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import aio_pika
import asyncpg
import redis

from shared.config import DATABASES, Settings
from shared.db import asyncpg_dsn, drop_database
from shared.rabbitmq_admin import ManagementClient
from workers.runtime.context import MessageContext

ROOT = Path(__file__).resolve().parents[1]

POSTGRES = os.environ.get("TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432")
RABBITMQ = os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672")
MANAGEMENT = os.environ.get("TEST_RABBITMQ_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672/")
REDIS = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
TEST_KEK = "test-only key-encryption key, 32+ characters long"
"""``SIGNING_KEY_KEK`` of every test's settings (the auth API refuses to start without one)."""


@contextmanager
def isolated_settings(
    label: str = "t", *, migrate: bool = True, roles: bool = False, **overrides: object
) -> Iterator[Settings]:
    """Settings pointing at fresh databases, a fresh vhost and a Redis key prefix of their own;
    all removed afterwards. (Rate-limit counters live in Redis per client address: shared
    keys let one test's logins from 127.0.0.1 use up the next test's allowance.) ``overrides``
    are flat, keyed by the variable's name in lower case (``ocr_engine="tesseract"``), as
    :meth:`Settings.build` takes them.

    ``roles=True``: every service connects as a least-privilege role of its own, which
    ``amsctl db migrate``'s code creates (``MIGRATE_DATABASE_URL`` = the test superuser).
    Roles are global to the PostgreSQL cluster: theirs are named after the tag (``<tag>_auth``
    …) and dropped afterwards, with the databases."""
    from migrations.runner import migrate as run_migrations

    tag = f"ams_{label}_{uuid.uuid4().hex[:8]}"
    vhost = tag
    urls = {db: f"{POSTGRES}/{tag}_{db}" for db in DATABASES}
    admin_urls = dict(urls)
    if roles:
        overrides.setdefault("migrate_database_url", f"{POSTGRES}/postgres")
        overrides.setdefault("database_owner_role", f"{tag}_owner")
        overrides.setdefault("audit_database_url", _as_role(urls["authdb"], f"{tag}_audit"))
        for db, service in ROLE_SERVICES.items():
            urls[db] = _as_role(urls[db], f"{tag}_{service}")
    redis_db = int(overrides.pop("redis_db", 15))  # type: ignore[call-overload]
    overrides.setdefault("signing_key_kek", TEST_KEK)
    overrides.setdefault("redis_key_prefix", f"{tag}:")
    settings = Settings.build(
        auth_database_url=urls["authdb"],
        users_database_url=urls["apidb"],
        admin_database_url=urls["admindb"],
        rabbitmq_url=f"{RABBITMQ}/{quote(vhost, safe='')}",
        rabbitmq_management_url=MANAGEMENT,
        redis_url=f"{REDIS}/{redis_db}",
        relay_metrics_port=0,
        **overrides,
    )
    with ManagementClient(MANAGEMENT) as mgmt:
        mgmt.create_vhost(vhost)
        try:
            if migrate:
                run_migrations(settings)
            yield settings
        finally:
            mgmt.delete_vhost(vhost)
            _delete_redis_keys(settings.redis.url, f"{settings.redis.key_prefix}*")
            for url in admin_urls.values():
                asyncio.run(drop_database(url))
            if roles:
                asyncio.run(drop_roles(tag))


ROLE_SERVICES = {"authdb": "auth", "apidb": "users", "admindb": "admin"}
"""The service whose role each database's URL names under ``isolated_settings(roles=True)``."""


def _as_role(url: str, role: str) -> str:
    """``url`` connecting as ``role`` (with a password: pg_hba may trust it or not)."""
    parts = urlsplit(url)
    hosts = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{role}:{role}-password@{hosts}"))


async def drop_roles(tag: str) -> None:
    """Drop every role named ``<tag>_…``; what they still own or hold in a database that
    outlives them goes back to postgres first."""
    conn = await asyncpg.connect(asyncpg_dsn(f"{POSTGRES}/postgres"))
    try:
        names = [r[0] for r in await conn.fetch(
            "SELECT quote_ident(rolname) FROM pg_roles WHERE starts_with(rolname, $1)", f"{tag}_"
        )]
        if not names:
            return
        roles = ", ".join(names)
        databases = await conn.fetch(
            "SELECT DISTINCT d.datname FROM pg_shdepend s JOIN pg_database d ON d.oid = s.dbid "
            "JOIN pg_roles r ON r.oid = s.refobjid WHERE starts_with(r.rolname, $1)", f"{tag}_"
        )
        for row in databases:
            other = await asyncpg.connect(asyncpg_dsn(f"{POSTGRES}/{row['datname']}"))
            try:
                await other.execute(f"REASSIGN OWNED BY {roles} TO postgres")
                for name in names:  # one by one: PostgreSQL 15 trips over a default ACL
                    await other.execute(f"DROP OWNED BY {name}")  # that two of them share
            finally:
                await other.close()
        await conn.execute(f"REASSIGN OWNED BY {roles} TO postgres")  # databases they own
        for name in names:
            await conn.execute(f"DROP OWNED BY {name}")
            await conn.execute(f"DROP ROLE IF EXISTS {name}")
    finally:
        await conn.close()


def _delete_redis_keys(url: str, pattern: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        for key in client.scan_iter(match=pattern, count=1000):
            client.delete(key)
    finally:
        client.close()


def env_for(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that makes ``Settings.from_env()`` equal ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTH_", "USERS_", "ADMIN_"))}
    env.update(settings.environment())
    env.update(PYTHONPATH=str(ROOT), **extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_for(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    """Poll ``check`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.1)


async def ready_count(channel: aio_pika.abc.AbstractChannel, queue: str) -> int:
    """Messages ready in ``queue`` (passive declare: the queue must exist)."""
    declared = await channel.declare_queue(queue, passive=True)
    return int(declared.declaration_result.message_count or 0)


def handler_context(
    event_type: str, consumer: str, message_id: str | None = None
) -> MessageContext:
    """The context the runtime gives a handler, for calling a handler directly."""
    return MessageContext(
        message_id=message_id or str(uuid.uuid4()), event_type=event_type, correlation_id=None,
        causation_id=None, headers={}, redelivered=False, attempts=0, consumer=consumer,
    )
