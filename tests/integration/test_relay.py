"""The relay against real PostgreSQL and RabbitMQ: nothing lost, order kept, fast wake-up."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from typer.testing import CliRunner, Result

from amsctl.main import app as amsctl
from outbox import add_event
from outbox.__main__ import build_relay
from outbox.leases import LOCK_CLASS_PARTITION
from outbox.relay import Relay
from outbox.schema import NOTIFIER_LOCK, NOTIFY_CHANNEL
from shared.config import Settings
from shared.db import asyncpg_dsn, create_engine, session_factory
from shared.events import DocumentUploaded, ProfileCreated
from tests.faults import TcpProxy
from tests.relay_support import (
    Collector,
    clear_outbox,
    outbox_rows,
    produce,
    start_relay,
    stop_relay,
    wait_for_relays,
)
from tests.support import env_for, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
async def relay_settings(settings: Settings) -> AsyncIterator[Settings]:
    await clear_outbox(settings)
    yield settings.replace(
        relay_batch_size=200,
        relay_poll_min_s=0.05,
        relay_poll_max_s=0.5,
        relay_backoff_base_s=0.05,
        relay_backoff_max_s=0.2,
        relay_max_attempts=3,
        relay_rebalance_s=0.2,
    )
    await clear_outbox(settings)


@contextlib.asynccontextmanager
async def running_relay(settings: Settings) -> AsyncIterator[Relay]:
    relay = build_relay(settings, "authdb")
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    await asyncio.wait_for(relay.ready.wait(), 10)
    try:
        yield relay
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def aggregates(n: int) -> list[uuid.UUID]:
    return [uuid.uuid4() for _ in range(n)]


async def test_rolled_back_transaction_publishes_nothing(relay_settings: Settings) -> None:
    engine = create_engine(relay_settings.database.auth_url)
    sessions = session_factory(engine)
    async with Collector(relay_settings) as collector, running_relay(relay_settings):
        with contextlib.suppress(RuntimeError):
            async with sessions() as session, session.begin():
                await add_event(
                    session,
                    DocumentUploaded(
                        document_id=uuid.uuid4(),
                        owner_id=uuid.uuid4(),
                        media_type="image/png",
                        size_bytes=1,
                    ),
                )
                raise RuntimeError("business rule failed after the event was added")
        committed = await produce(relay_settings, aggregates(1), 1)
        await collector.wait_for(committed, 10)
    await engine.dispose()
    assert collector.ids == committed, "only the committed event may arrive"
    assert await outbox_rows(relay_settings) == []


async def test_thousand_concurrent_transactions_all_arrive(relay_settings: Settings) -> None:
    async with Collector(relay_settings) as collector, running_relay(relay_settings):
        committed = await produce(
            relay_settings, aggregates(200), 5, concurrency=40, max_delay_s=0.02
        )
        assert len(committed) == 1000
        await collector.wait_for(committed, 60)
    assert collector.ids == committed
    assert collector.order_violations() == []
    assert await outbox_rows(relay_settings) == [], "confirmed rows are deleted"


async def test_relay_killed_repeatedly_loses_nothing(relay_settings: Settings) -> None:
    async with Collector(relay_settings) as collector:
        producing = asyncio.create_task(
            produce(relay_settings, aggregates(100), 20, concurrency=10, max_delay_s=0.01)
        )
        kills = 0
        while not producing.done() or kills < 3:
            relay = start_relay(relay_settings)
            await asyncio.sleep(0.7)
            stop_relay(relay, kill=True)
            kills += 1
        committed = await producing
        relay = start_relay(relay_settings)
        try:
            await collector.wait_for(committed, 60)
            await wait_for_relays(relay_settings, 1)
        finally:
            assert stop_relay(relay) == 0, "SIGTERM drains and exits cleanly"
    assert kills >= 3
    assert collector.ids == committed, "every committed event arrived"
    assert collector.order_violations() == []
    duplicates = len(collector.deliveries) - len(collector.ids)
    print(f"kills={kills} events={len(committed)} duplicates={duplicates}")


def _via_proxy(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username}:{parts.password}@127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


async def test_broker_unreachable_for_ten_seconds(relay_settings: Settings) -> None:
    with TcpProxy("127.0.0.1", 5672) as proxy:
        relay_through_proxy = relay_settings.replace(
            rabbitmq_url=_via_proxy(relay_settings.broker.url, proxy.port)
        )
        async with (
            Collector(relay_settings) as collector,
            running_relay(relay_through_proxy) as relay,
        ):
            first = await produce(relay_settings, aggregates(50), 2)
            await collector.wait_for(first, 20)
            proxy.cut()
            during = await produce(relay_settings, aggregates(100), 3, concurrency=10)
            await asyncio.sleep(10)
            assert not (during & collector.ids), "nothing can arrive while the broker is away"
            proxy.restore()
            await collector.wait_for(first | during, 30)
            assert relay.ready.is_set()
    assert collector.ids == first | during
    assert collector.order_violations() == []


async def test_two_relays_share_partitions_and_keep_aggregate_order(
    relay_settings: Settings,
) -> None:
    async with Collector(relay_settings) as collector:
        relays = [start_relay(relay_settings), start_relay(relay_settings)]
        try:
            await wait_for_relays(relay_settings, 2)
            await asyncio.sleep(1.5)  # a few rebalance periods: the partitions split
            owners = await _partition_owners(relay_settings)
            committed = await produce(
                relay_settings, aggregates(50), 20, concurrency=25, max_delay_s=0.005
            )
            await collector.wait_for(committed, 60)
        finally:
            codes = [stop_relay(r) for r in relays]
    assert sorted(owners.values()) == [8, 8], f"partitions split evenly: {owners}"
    assert codes == [0, 0]
    assert collector.ids == committed
    assert collector.order_violations() == []


async def _partition_owners(settings: Settings) -> dict[int, int]:
    conn = await asyncpg.connect(asyncpg_dsn(settings.database.auth_url))
    try:
        rows = await conn.fetch(
            "SELECT pid, count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND classid = $1::oid AND database = (SELECT oid FROM pg_database "
            "WHERE datname = current_database()) GROUP BY pid",
            LOCK_CLASS_PARTITION,
        )
    finally:
        await conn.close()
    return {r["pid"]: r["n"] for r in rows}


async def test_unroutable_event_is_parked_without_blocking_others(relay_settings: Settings) -> None:
    engine = create_engine(relay_settings.database.auth_url)
    sessions = session_factory(engine)
    # Only user.* is bound in this vhost: document.uploaded has nowhere to go.
    async with (
        Collector(relay_settings, routing_keys=("user.#",)) as collector,
        running_relay(relay_settings),
    ):
        async with sessions() as session, session.begin():
            poison = await add_event(
                session,
                DocumentUploaded(
                    document_id=uuid.uuid4(),
                    owner_id=uuid.uuid4(),
                    media_type="image/png",
                    size_bytes=1,
                ),
            )
        behind = await produce(relay_settings, aggregates(20), 5)
        await collector.wait_for(behind, 20)
        deadline = time.monotonic() + 10
        while not await outbox_rows(relay_settings, "parked_at IS NOT NULL"):
            assert time.monotonic() < deadline, "the unroutable event was never parked"
            await asyncio.sleep(0.1)
    await engine.dispose()
    [parked] = await outbox_rows(relay_settings)
    assert str(parked["event_id"]) == str(poison)
    assert parked["attempts"] == 3 and "unroutable" in parked["last_error"]

    result = await _amsctl(relay_settings, "outbox", "status", "--json")
    assert result.exit_code == 0, result.output
    status = {s["database"]: s for s in json.loads(result.output)}
    assert status["authdb"]["parked"] == 1 and status["authdb"]["backlog"] == 0
    assert status["authdb"]["publishing_blocked_by"] == []  # no broker alarm

    result = await _amsctl(
        relay_settings, "outbox", "requeue", "--database", "authdb", "--event-id", str(poison)
    )
    assert result.exit_code == 0, result.output
    [requeued] = await outbox_rows(relay_settings)
    assert requeued["parked_at"] is None and requeued["attempts"] == 0


async def test_event_no_consumer_handles_is_published_not_parked(relay_settings: Settings) -> None:
    """profile.created has no consumer in the product (audit only): no bound queue is not an
    error, the relay must not retry and park it (it did, with ``mandatory`` on every event)."""
    engine = create_engine(relay_settings.database.auth_url)
    sessions = session_factory(engine)
    async with (
        Collector(relay_settings, routing_keys=("user.#",)) as collector,
        running_relay(relay_settings),
    ):
        async with sessions() as session, session.begin():
            await add_event(session, ProfileCreated(user_id=uuid.uuid4(), display_name="n"))
        behind = await produce(relay_settings, aggregates(5), 2)
        await collector.wait_for(behind, 20)
        deadline = time.monotonic() + 10
        while rows := await outbox_rows(relay_settings):
            assert time.monotonic() < deadline, f"left in the outbox: {rows}"
            await asyncio.sleep(0.05)
    await engine.dispose()


async def _amsctl(settings: Settings, *args: str) -> Result:
    """The CLI runs its own event loop, so it runs in a thread here."""
    return await asyncio.to_thread(CliRunner().invoke, amsctl, list(args), env=env_for(settings))


async def test_commit_wakes_relay_before_poll_interval(relay_settings: Settings) -> None:
    slow_poll = relay_settings.replace(relay_poll_min_s=5.0, relay_poll_max_s=5.0)
    async with Collector(relay_settings) as collector, running_relay(slow_poll):
        await asyncio.sleep(0.5)  # the relay is idle, sleeping on a 5 s poll
        latencies = []
        for _ in range(5):
            started = time.monotonic()
            committed = await produce(relay_settings, aggregates(1), 1)
            await collector.wait_for(committed, 5)
            latencies.append(time.monotonic() - started)
            await asyncio.sleep(0.2)
    assert max(latencies) < 0.5, f"woken by NOTIFY, not by the 5 s poll: {latencies}"


async def test_database_connections_dropped_mid_stream(relay_settings: Settings) -> None:
    """PostgreSQL goes away under the relay (every connection dropped, new ones refused for
    3 s, as in a restart): the relay reconnects by itself and loses nothing."""
    with TcpProxy("127.0.0.1", 5432) as proxy:
        parts = urlsplit(relay_settings.database.auth_url)
        via_proxy = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))
        relay_through_proxy = relay_settings.replace(auth_database_url=via_proxy)
        async with Collector(relay_settings) as collector, running_relay(relay_through_proxy):
            producing = asyncio.create_task(
                produce(relay_settings, aggregates(100), 10, concurrency=10, max_delay_s=0.01)
            )
            await asyncio.sleep(0.3)
            proxy.cut()
            await asyncio.sleep(3)
            proxy.restore()
            committed = await producing
            await collector.wait_for(committed, 30)
    assert collector.ids == committed
    assert collector.order_violations() == []


async def _insert_event(conn: asyncpg.Connection) -> None:
    await conn.execute(
        "INSERT INTO outbox (event_id, event_type, routing_key, aggregate_type, aggregate_id,"
        " partition, schema_version, payload) VALUES (gen_random_uuid(), 'user.registered',"
        " 'user.registered', 'user', 'n', 0, 1, '{}'::jsonb)"
    )


async def test_one_committing_transaction_at_a_time_notifies(relay_settings: Settings) -> None:
    """Notifying transactions commit one WAL flush at a time; the trigger lets one notify,
    and only while it commits (an open transaction mutes nobody)."""
    dsn = asyncpg_dsn(relay_settings.database.auth_url)
    listener, other, writer = [await asyncpg.connect(dsn) for _ in range(3)]
    notified: list[object] = []
    await listener.add_listener(NOTIFY_CHANNEL, lambda *args: notified.append(args))
    try:
        still_open = other.transaction()
        await still_open.start()
        await _insert_event(other)
        async with writer.transaction():
            await _insert_event(writer)
        await wait_for(_count_is(notified, 1), 5, "a commit beside an open transaction")
        await still_open.rollback()

        committing = other.transaction()  # holds the notifier lock as a committing one does
        await committing.start()
        await other.execute("SELECT pg_advisory_xact_lock($1::int, $2::int)", *NOTIFIER_LOCK)
        async with writer.transaction():
            await _insert_event(writer)  # commits without notifying
        await asyncio.sleep(0.3)
        assert len(notified) == 1, "a commit notified while another held the notifier lock"
        await committing.commit()
        async with writer.transaction():
            await _insert_event(writer)  # the lock is free again: this one notifies
        await wait_for(_count_is(notified, 2), 5, "the next commit's notification")
    finally:
        await writer.execute("DELETE FROM outbox WHERE aggregate_id = 'n'")
        for conn in (listener, other, writer):
            await conn.close()


def _count_is(items: list[object], n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return len(items) == n

    return check
