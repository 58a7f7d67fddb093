"""One trace from ``POST /auth/register`` through the relay and the profiles worker to the
``profile.created`` message, recorded with an in-memory exporter; messages without trace
context, or with a malformed one, start a new trace and are handled normally."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aio_pika
import asyncpg
import pytest
from alembic import command
from litestar.testing import AsyncTestClient
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from apps.auth.app import create_app
from migrations.runner import alembic_config
from outbox.__main__ import build_relays
from shared import messaging as m
from shared.config import DATABASES, Settings
from shared.db import asyncpg_dsn
from shared.topology_apply import apply_topology
from shared.tracing import configure_tracing, parse_traceparent, shutdown_tracing
from tests.e2e.stack import declare_tap, next_tapped
from tests.runtime_consumer import user_message
from tests.support import isolated_settings, wait_for
from workers import registry

TAP = "test.trace_profile_created"


@pytest.fixture(scope="module")
def trace_settings() -> Iterator[Settings]:
    with isolated_settings(
        "trace", redis_key_prefix=f"tr{uuid.uuid4().hex[:8]}:", worker_metrics_port=0,
        relay_poll_max_s=0.2, argon2_time_cost=1, argon2_memory_kib=8192,
        argon2_allow_weak=True, log_level="WARNING", worker_trace_statements=True,
    ) as s:
        asyncio.run(apply_topology(s))
        asyncio.run(declare_tap(s.broker.url, TAP, "profile.created"))
        yield s


@pytest.fixture
def exporter(trace_settings: Settings) -> Iterator[InMemorySpanExporter]:
    spans = InMemorySpanExporter()
    assert configure_tracing(trace_settings.observability, service="test", exporter=spans)
    try:
        yield spans
    finally:
        shutdown_tracing()


@pytest.fixture
async def system(
    trace_settings: Settings, exporter: InMemorySpanExporter
) -> AsyncIterator[AsyncTestClient[Any]]:
    """The auth API, the relay of authdb and apidb, and the profiles worker, in-process."""
    stop = asyncio.Event()
    relays = asyncio.gather(
        *(r.run(stop) for r in build_relays(trace_settings, ("authdb", "apidb")))
    )
    worker = await registry.get("profiles")(trace_settings).start(trace_settings)
    try:
        async with AsyncTestClient(create_app(trace_settings)) as client:
            yield client
    finally:
        await worker.stop(grace_s=5)
        stop.set()
        await asyncio.wait_for(relays, 15)


def _hex(span: ReadableSpan) -> tuple[str, str]:
    assert span.context is not None
    return format(span.context.trace_id, "032x"), format(span.context.span_id, "016x")


def _one(spans: list[ReadableSpan], name: str, **attributes: object) -> ReadableSpan:
    found = [
        s for s in spans if s.name == name
        and all((s.attributes or {}).get(k) == v for k, v in attributes.items())
    ]
    assert len(found) == 1, [(s.name, s.kind, dict(s.attributes or {})) for s in spans
                             if s.kind is SpanKind.SERVER]
    return found[0]


async def _spans_with(exporter: InMemorySpanExporter, name: str, **attrs: object) -> None:
    async def present() -> bool:
        return any(
            s.name == name and all((s.attributes or {}).get(k) == v for k, v in attrs.items())
            for s in exporter.get_finished_spans()
        )

    await wait_for(present, 15, f"span {name} {attrs}")


async def test_one_trace_from_register_to_the_profile_created_header(
    system: AsyncTestClient[Any], trace_settings: Settings, exporter: InMemorySpanExporter
) -> None:
    email = f"t{uuid.uuid4().hex[:8]}@example.com"
    response = await system.post(
        "/auth/register", json={"email": email, "password": "correct horse battery"}
    )
    assert response.status_code == 201, response.text
    tapped = await next_tapped(trace_settings.broker.url, TAP)
    await _spans_with(exporter, "handle user.registered")
    await _spans_with(exporter, "events publish", **{"db.namespace": "apidb"})
    spans = list(exporter.get_finished_spans())

    server = _one(spans, "POST /auth/register")
    assert server.kind is SpanKind.SERVER
    trace_id, _ = _hex(server)
    in_trace = [s for s in spans if _hex(s)[0] == trace_id]
    by_id = {_hex(s)[1]: s for s in in_trace}

    consume = _one(in_trace, "profiles process")
    assert consume.kind is SpanKind.CONSUMER
    assert consume.parent is not None and consume.parent.is_remote
    handle = _one(in_trace, "handle user.registered")
    assert handle.parent is not None and format(handle.parent.span_id, "016x") == _hex(consume)[1]
    # The user.registered row was written inside the request's trace (a span of the server
    # span's subtree), and the consumer continued from there.
    origin = by_id[format(consume.parent.span_id, "016x")]
    assert origin.start_time is not None and server.start_time is not None
    assert server.start_time <= origin.start_time
    # Database spans belong to the trace too: the handler's statements are its children.
    statements = [s for s in in_trace if (s.attributes or {}).get("db.system") == "postgresql"]
    assert any(s.parent and s.parent.span_id == handle.context.span_id for s in statements)
    assert server.context is not None  # and the API's own statements are the server span's
    assert any(s.parent and s.parent.span_id == server.context.span_id for s in statements)
    assert len(statements) >= 3, [s.name for s in in_trace]

    # The follow-up event carries the trace on, as written by the handler.
    header = tapped.headers[m.H_TRACEPARENT]
    assert isinstance(header, str)
    carried = parse_traceparent(header)
    assert carried is not None
    assert format(carried.trace_id, "032x") == trace_id
    assert format(carried.span_id, "016x") == _hex(handle)[1]

    # The relay's publish spans are linked to the events' origins.
    publish_api = _one(spans, "events publish", **{"db.namespace": "apidb"})
    assert publish_api.kind is SpanKind.PRODUCER
    assert any(
        link.context.trace_id == carried.trace_id and link.context.span_id == carried.span_id
        for link in publish_api.links
    )
    publish_auth = _one(spans, "events publish", **{"db.namespace": "authdb"})
    assert any(link.context.trace_id == carried.trace_id for link in publish_auth.links)


async def _publish(settings: Settings, message: aio_pika.Message) -> None:
    connection = await aio_pika.connect(settings.broker.url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(m.EVENTS_EXCHANGE)
        await exchange.publish(message, routing_key=message.type or "", mandatory=True)


@pytest.mark.parametrize(
    "traceparent", [None, "00-not-a-trace-context-01", "00-" + "0" * 32 + "-" + "1" * 16 + "-01"]
)
async def test_a_message_without_valid_trace_context_starts_a_new_trace(
    system: AsyncTestClient[Any], trace_settings: Settings, exporter: InMemorySpanExporter,
    traceparent: str | None,
) -> None:
    message = user_message(f"n{uuid.uuid4().hex[:8]}@example.com")
    if traceparent is not None:
        assert message.headers is not None
        message.headers[m.H_TRACEPARENT] = traceparent
    await _publish(trace_settings, message)
    tapped = await next_tapped(trace_settings.broker.url, TAP)  # handled: profile.created
    await _spans_with(exporter, "profiles process", **{"messaging.message.id": message.message_id})
    consume = _one(
        list(exporter.get_finished_spans()), "profiles process",
        **{"messaging.message.id": message.message_id},
    )
    assert consume.parent is None  # a root: a new trace
    assert consume.status.is_ok
    carried = parse_traceparent(tapped.headers[m.H_TRACEPARENT])
    assert carried is not None and format(carried.trace_id, "032x") == _hex(consume)[0]


async def test_workers_record_statement_spans_only_when_asked(
    trace_settings: Settings, exporter: InMemorySpanExporter
) -> None:
    """By default (WORKER_TRACE_STATEMENTS off) the worker records its consume and handle
    spans, no span per SQL statement nor per connection checkout ("connect"); the module's
    settings turn them on (the first test finds the handler's statements). The message
    arrives alone: the path of one message per transaction."""
    default = trace_settings.replace(worker_trace_statements=False)
    worker = await registry.get("profiles")(default).start(default)
    try:
        message = user_message(f"q{uuid.uuid4().hex[:8]}@example.com")
        await _publish(trace_settings, message)
        handled = {"messaging.message.id": message.message_id}
        await _spans_with(exporter, "profiles process", **handled)
    finally:
        await worker.stop(grace_s=5)
    spans = list(exporter.get_finished_spans())
    consume = _one(spans, "profiles process", **{"messaging.message.id": message.message_id})
    in_trace = [s for s in spans if _hex(s)[0] == _hex(consume)[0]]
    names = {s.name for s in in_trace}
    assert names == {"handle user.registered", "profiles process"}  # no statement, no connect


BEFORE_TRACE_CONTEXT = {"authdb": "authdb_0005", "apidb": "apidb_0004", "admindb": "admindb_0003"}


def _outbox_columns(settings: Settings, database: str) -> set[str]:
    async def read() -> set[str]:
        conn = await asyncpg.connect(asyncpg_dsn(settings.database.url(database)))
        try:
            rows = await conn.fetch(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'outbox'"
            )
        finally:
            await conn.close()
        return {r["column_name"] for r in rows}

    return asyncio.run(read())


@pytest.mark.parametrize("database", DATABASES)
def test_an_existing_outbox_gains_the_trace_context_columns(
    trace_settings: Settings, database: str
) -> None:
    """A database migrated before this change upgrades to the new columns, and back."""
    config = alembic_config(database, trace_settings.database.url(database))
    assert {"traceparent", "tracestate"} <= _outbox_columns(trace_settings, database)
    command.downgrade(config, BEFORE_TRACE_CONTEXT[database])
    assert not {"traceparent", "tracestate"} & _outbox_columns(trace_settings, database)
    command.upgrade(config, "head")
    assert {"traceparent", "tracestate"} <= _outbox_columns(trace_settings, database)
