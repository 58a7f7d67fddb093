"""The console's operator actions on the real authdb, outboxes and RabbitMQ (the APIs faked):
requeueing a parked outbox event is audited under the admin's name, a broker that is
away is a page that names it, and the dead-letter pages keep one broker connection that
outlives a loss."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote

import aio_pika
import asyncpg
import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from apps.auth import audit
from apps.auth.audit import AuditAction, AuditFilter, AuditSource
from frontends.bff.api import ApiClient
from frontends.bff.session import MemorySessionStore
from frontends.console.app import create_app
from shared.config import Settings
from shared.db import asyncpg_dsn, create_engine, session_factory
from shared.topology_apply import apply_topology, vhost_of
from tests.support import MANAGEMENT, free_port, isolated_settings

ADMIN_EMAIL = "ops@example.org"


def fake_auth(request: httpx.Request) -> httpx.Response:
    if request.url.path == "/auth/login":
        return httpx.Response(200, json={"access_token": "a", "refresh_token": "r",
                                         "token_type": "Bearer", "expires_in": 900})
    return httpx.Response(200, json={"user_id": str(uuid.uuid4()), "email": ADMIN_EMAIL,
                                     "roles": ["user", "admin"], "status": "active"})


@pytest.fixture(scope="module")
def cfg() -> Iterator[Settings]:
    with isolated_settings("console", console_metrics_targets="") as s:
        yield s


def console(settings: Settings) -> Litestar:
    api = ApiClient({"auth": "http://auth", "users": "http://users", "admin": "http://admin"},
                    timeout_s=2, transport=httpx.MockTransport(fake_auth))
    return create_app(settings, api=api, store=MemorySessionStore())


async def signed_in(client: AsyncTestClient[Litestar]) -> None:
    page = await client.get("/login")
    token = re.search(r'name="_csrf" value="([^"]+)"', page.text)
    assert token
    answer = await client.post("/login", data={"_csrf": token.group(1), "email": ADMIN_EMAIL,
                                               "password": "whatever"})
    assert answer.status_code == 200, answer.text  # followed to the overview


@pytest.fixture
async def client(cfg: Settings) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(console(cfg)) as c:
        await signed_in(c)
        yield c


async def _park(url: str) -> str:
    event_id = str(uuid.uuid4())
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await conn.execute(
            "INSERT INTO outbox (event_id, event_type, routing_key, aggregate_type, aggregate_id,"
            " partition, schema_version, payload, attempts, last_error, parked_at) VALUES"
            " ($1, 'user.registered', 'user.registered', 'user', 'u1', 0, 1, '{}', 10,"
            " 'unroutable', now())", uuid.UUID(event_id))
        return event_id
    finally:
        await conn.close()


async def _parked(url: str, event_id: str) -> Any:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return await conn.fetchval("SELECT parked_at IS NOT NULL FROM outbox WHERE event_id = $1",
                                   uuid.UUID(event_id))
    finally:
        await conn.close()


async def test_requeueing_a_parked_event_is_audited_under_the_admin(
    client: AsyncTestClient[Litestar], cfg: Settings
) -> None:
    event_id = await _park(cfg.database.users_url)
    page = await client.get("/outbox")
    assert event_id in page.text
    assert "unroutable" in page.text
    token = re.search(r'name="_csrf" value="([^"]+)"', page.text)
    assert token
    done = await client.post("/outbox/requeue", data={"_csrf": token.group(1),
                                                      "database": "apidb", "event_id": event_id})
    assert done.status_code == 200
    assert "apidb: 1 parked event(s) re-queued." in done.text
    assert await _parked(cfg.database.users_url, event_id) is False
    assert "No parked events" in (await client.get("/outbox")).text
    engine = create_engine(cfg.database.auth_url, pool_size=1)
    try:
        [entry] = await audit.list_entries(session_factory(engine), AuditFilter(
            action=AuditAction.OUTBOX_REQUEUE, target=f"apidb:{event_id}"))
    finally:
        await engine.dispose()
    assert (entry.actor, entry.source, entry.outcome) == (ADMIN_EMAIL, AuditSource.CONSOLE, "ok")
    trail = await client.get("/audit", params={"action": "outbox.", "source": "console"})
    assert f"apidb:{event_id}" in trail.text


async def test_the_dead_letter_page_names_rabbitmq_when_it_is_away(cfg: Settings) -> None:
    closed = f"http://guest:guest@127.0.0.1:{free_port()}/"
    away = cfg.replace(rabbitmq_url=f"amqp://guest:guest@127.0.0.1:{free_port()}/",
                   rabbitmq_management_url=closed)
    async with AsyncTestClient(console(away)) as c:
        await signed_in(c)
        page = await c.get("/dead-letters")
        assert page.status_code == 503
        assert "RabbitMQ" in page.text
        assert "Traceback" not in page.text
        sagas = await c.get("/sagas")
        assert sagas.status_code == 200, "pages that do not need the broker still work"


async def _console_connections(cfg: Settings) -> list[dict[str, Any]]:
    """The console's broker connections in the test's vhost, as the management API lists
    them (its statistics lag by a few seconds: wait until they settle)."""
    vhost = quote(vhost_of(cfg.broker.url), safe="")
    async with httpx.AsyncClient(auth=("guest", "guest"), timeout=10) as mgmt:
        answer = await mgmt.get(f"{MANAGEMENT.rstrip('/')}/api/vhosts/{vhost}/connections")
    answer.raise_for_status()
    return [c for c in answer.json()
            if (c.get("client_properties") or {}).get("connection_name") == "console"]


async def _settled(cfg: Settings, count: int) -> list[dict[str, Any]]:
    for _ in range(100):
        found = await _console_connections(cfg)
        if len(found) == count:
            return found
        await asyncio.sleep(0.2)
    return await _console_connections(cfg)


async def test_dead_letter_pages_share_one_connection_that_survives_its_loss(
    client: AsyncTestClient[Litestar], cfg: Settings
) -> None:
    await apply_topology(cfg)
    await _dead_letters(cfg, "profiles", "kept-1")
    operations = client.app.state["operations"]
    for _ in range(3):
        page = await client.get("/dead-letters")
        assert page.status_code == 200, page.text
        assert "kept-1" in page.text
    assert operations.broker.opened == 1, "every page reads on the same connection"
    [kept] = await _settled(cfg, 1)

    # The broker drops it (a node restart, an operator closing it): the next page reconnects.
    quoted = quote(kept["name"], safe="")
    async with httpx.AsyncClient(auth=("guest", "guest"), timeout=10) as mgmt:
        closed = await mgmt.delete(f"{MANAGEMENT.rstrip('/')}/api/connections/{quoted}")
    assert closed.status_code == 204
    for _ in range(2):
        page = await client.get("/dead-letters")
        assert page.status_code == 200, page.text
        assert "kept-1" in page.text, "the letter was read again, not lost"
    assert operations.broker.opened == 2
    [again] = await _settled(cfg, 1)
    assert again["name"] != kept["name"]


async def test_a_dead_letter_queue_with_a_delivery_limit_is_not_read(
    client: AsyncTestClient[Litestar], cfg: Settings
) -> None:
    # The page's single queue listing must carry what the delivery-limit check needs.
    connection = await aio_pika.connect(cfg.broker.url)
    try:
        channel = await connection.channel()
        limited = await channel.declare_queue("limited.dlq", durable=True, arguments={
            "x-queue-type": "quorum", "x-delivery-limit": 5})
        await channel.default_exchange.publish(
            aio_pika.Message(b"{}", message_id="limited-1"), routing_key="limited.dlq")
        try:
            page = await client.get("/dead-letters", params={"queue": "limited.dlq"})
            assert page.status_code == 409, page.text
            assert "delivery limit of 5" in page.text
        finally:
            await limited.delete(if_unused=False, if_empty=False)
    finally:
        await connection.close()


async def test_the_dead_letter_page_counts_a_letter_that_just_arrived(
    client: AsyncTestClient[Litestar], cfg: Settings
) -> None:
    # The management API samples queue depths (every 5 s here): the page shows what it read.
    await apply_topology(cfg)
    await _dead_letters(cfg, "documents", "fresh-0", "fresh-1")
    page = await client.get("/dead-letters")
    assert page.status_code == 200, page.text
    row = re.search(r'documents\.dlq</a></td><td class="num">(\d+)<', page.text)
    assert row and row.group(1) == "2", page.text
    assert "fresh-0" in page.text and "fresh-1" in page.text
    connection = await aio_pika.connect(cfg.broker.url)
    async with connection:
        await (await (await connection.channel()).get_queue("documents.dlq")).purge()


async def _dead_letters(cfg: Settings, failed_in: str, *message_ids: str) -> None:
    """Letters in ``failed_in``'s dead-letter queue, as the runtime leaves them."""
    connection = await aio_pika.connect(cfg.broker.url)
    async with connection:
        channel = await connection.channel()
        for message_id in message_ids:
            await channel.default_exchange.publish(
                aio_pika.Message(b'{"x": 1}', message_id=message_id,
                                 headers={"x-ams-failed-queue": failed_in}),
                routing_key=f"{failed_in}.dlq")
