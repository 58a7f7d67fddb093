"""The consumer runtime against real RabbitMQ and PostgreSQL (isolated vhost and databases)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import asyncpg
import pytest
from prometheus_client import REGISTRY

from shared import messaging as m
from shared.broker import declare_topology
from shared.config import Settings
from shared.db import asyncpg_dsn
from shared.messaging import EVENTS_EXCHANGE
from shared.topology import parse_retry_delays, topology_of
from tests.faults import TcpProxy
from tests.runtime_consumer import BATCH_SIZES, EFFECTS_DDL, build_consumer, user_message
from tests.support import isolated_settings, ready_count, wait_for
from workers.runtime.amqp import Subscription
from workers.runtime.reading import MAX_BODY_BYTES
from workers.runtime.running import RunningConsumer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def rt_settings() -> Iterator[Settings]:
    with isolated_settings(
        "rt",
        worker_retry_delays="300ms,600ms",
        worker_max_attempts=3,
        worker_metrics_port=0,
        worker_shutdown_timeout_s=15.0,
        worker_prefetch=16,
    ) as settings:
        yield settings


@pytest.fixture(scope="module")
async def db(rt_settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    dsn = asyncpg_dsn(rt_settings.database.users_url)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    await pool.execute(EFFECTS_DDL)
    yield pool
    await pool.close()


@pytest.fixture(scope="module")
async def channel(rt_settings: Settings) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    connection = await aio_pika.connect(rt_settings.broker.url)
    yield await connection.channel()
    await connection.close()


@pytest.fixture
def name() -> str:
    return f"rt_{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def running(
    rt_settings: Settings, name: str, db: asyncpg.Pool
) -> AsyncIterator[list[RunningConsumer]]:
    """Start consumers with ``await start()``; each is stopped after the test."""
    started: list[RunningConsumer] = []
    yield started
    for consumer in started:
        await consumer.stop(grace_s=5)


async def publish(channel: aio_pika.abc.AbstractChannel, message: aio_pika.Message) -> None:
    exchange = await channel.get_exchange(EVENTS_EXCHANGE)
    await exchange.publish(message, routing_key=message.type or "")


async def effects(db: asyncpg.Pool, name: str) -> list[asyncpg.Record]:
    return list(await db.fetch(
        "SELECT * FROM rt_effects WHERE consumer = $1 ORDER BY id", name
    ))


async def dead_letters(
    channel: aio_pika.abc.AbstractChannel, name: str
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Everything in the DLQ, read without removing it (get + requeue, as amsctl does)."""
    queue = await channel.get_queue(f"{name}.dlq")
    got = []
    while (message := await queue.get(no_ack=False, fail=False)) is not None:
        got.append(message)
    for message in got:
        await message.nack(requeue=True)
    return got


def env_of(settings: Settings) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT)) | settings.environment()


async def test_a_start_that_fails_after_connecting_leaves_no_connection_behind(
    rt_settings: Settings, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The retry loop starts a new consumer after each failure: the failed one's robust
    connection must be closed, or it reconnects (and holds its engine) for ever."""

    async def refused(self: Subscription) -> None:
        raise aio_pika.exceptions.AMQPError("basic.consume refused")

    monkeypatch.setattr(Subscription, "start", refused)
    consumer = RunningConsumer(build_consumer(name), rt_settings)
    with pytest.raises(aio_pika.exceptions.AMQPError, match="refused"):
        await consumer.start()
    assert consumer.connection.is_closed
    with pytest.raises(RuntimeError, match="shutdown"):  # its blocking-call threads are gone
        consumer._executor.submit(print)


async def test_same_message_three_times_also_concurrently_has_one_effect(
    rt_settings: Settings, name: str, db: asyncpg.Pool, channel: Any, running: list[RunningConsumer]
) -> None:
    consumer = build_consumer(name)
    # Three instances on one queue: the three copies of a slow message overlap in time.
    for _ in range(3):
        running.append(await consumer.start(rt_settings))
    sequential, concurrent = str(uuid.uuid4()), str(uuid.uuid4())
    for _ in range(3):
        await publish(channel, user_message("ok@example.com", message_id=sequential))
        await asyncio.sleep(0.3)
    for _ in range(3):
        await publish(channel, user_message("slow@example.com", message_id=concurrent))

    async def all_acked() -> bool:
        return await ready_count(channel, name) == 0 and all(r.in_flight == 0 for r in running)

    await asyncio.sleep(0.5)
    await wait_for(all_acked, 20, "every copy to be acked")
    rows = await effects(db, name)
    assert sorted(r["message_id"] for r in rows) == sorted([sequential, concurrent])
    assert await dead_letters(channel, name) == []


async def test_kill_9_after_commit_before_ack_has_no_second_effect(
    rt_settings: Settings, name: str, db: asyncpg.Pool, channel: Any,
    running: list[RunningConsumer], tmp_path: Path,
) -> None:
    marker = tmp_path / "committed"
    env = env_of(rt_settings) | {"RT_HANG_MARKER": str(marker)}
    # The subprocess declares the queue; publish once it consumes, then it hangs before the ack.
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.runtime_consumer", name], env=env, cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        await wait_for(
            lambda: _queue_exists(rt_settings.broker.url, name), 20, "the subprocess to declare"
        )
        await asyncio.sleep(0.5)
        message_id = str(uuid.uuid4())
        await publish(channel, user_message("ok@example.com", message_id=message_id))
        await wait_for(lambda: _exists(marker), 20, "the commit in the subprocess")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert len(await effects(db, name)) == 1

    # The unacked message is redelivered to a fresh consumer, which recognises it.
    running.append(await build_consumer(name).start(rt_settings))
    async def duplicate_acked() -> bool:
        return _handled(name, duplicate=True) == 1 and running[0].in_flight == 0

    await wait_for(duplicate_acked, 20, "the redelivery to be recognised and acked")
    assert _handled(name, duplicate=False) == 0
    assert await ready_count(channel, name) == 0
    rows = await effects(db, name)
    assert [r["message_id"] for r in rows] == [message_id]
    assert await dead_letters(channel, name) == []


async def test_poison_message_is_dead_lettered_with_reason_while_others_flow(
    rt_settings: Settings, name: str, db: asyncpg.Pool, channel: Any, running: list[RunningConsumer]
) -> None:
    running.append(await build_consumer(name).start(rt_settings))
    poison = user_message("transient-always@example.com")
    await publish(channel, poison)
    good = [user_message(f"ok{i}@example.com") for i in range(30)]
    for message in good:
        await publish(channel, message)

    async def good_done() -> bool:
        return len(await effects(db, name)) == len(good)

    started = time.monotonic()
    await wait_for(good_done, 10, "the good messages")
    # They were all handled before the poison message ran out of retries (300ms + 600ms).
    assert await dead_letters(channel, name) == []

    async def parked() -> bool:
        return len(await dead_letters(channel, name)) == 1

    await wait_for(parked, 15, "the poison message in the DLQ")
    assert time.monotonic() - started >= 0.9 - 0.3
    [dead] = await dead_letters(channel, name)
    headers = dead.headers
    assert headers[m.H_ATTEMPTS] == 3
    assert headers[m.H_FAILED_QUEUE] == name
    assert headers[m.H_FAILED_ROUTING_KEY] == "user.registered"
    assert headers[m.H_ERROR_TYPE] == "shared.errors.TransientError"
    assert headers[m.H_ERROR_MESSAGE] == "dependency is down for good"
    assert "tests.runtime_consumer:record_user:" in headers[m.H_ERROR_WHERE]
    assert "TransientError" in headers[m.H_TRACEBACK]
    assert headers[m.H_FIRST_FAILURE_AT] < headers[m.H_LAST_FAILURE_AT]
    _assert_same_message(dead, poison)
    assert len(await effects(db, name)) == len(good)
    assert _failed(name, "retried", "transient", "TransientError") == 2
    assert _failed(name, "dead_lettered", "exhausted", "TransientError") == 1
    assert _handled(name, duplicate=False) == len(good)


async def test_a_poison_message_in_a_batch_handlers_batch_fails_alone(
    rt_settings: Settings, name: str, db: asyncpg.Pool, channel: Any, running: list[RunningConsumer]
) -> None:
    """Queued before the consumer starts, the messages arrive together and go to the
    batch form of the handler; the poison fails that batch, whose messages then run one
    by one: every good one applied exactly once, the poison alone retried and parked."""
    built = build_consumer(name, batched=True)
    await declare_topology(channel, topology_of(
        (built.spec_for(rt_settings),), parse_retry_delays(rt_settings.worker.retry_delays)
    ))
    good = [user_message(f"ok{i}@example.com") for i in range(30)]
    poison = user_message("transient-always@example.com")
    for message in [*good[:10], poison, *good[10:]]:
        await publish(channel, message)

    async def queued() -> bool:
        return await ready_count(channel, name) == len(good) + 1

    await wait_for(queued, 10, "the messages in the work queue")
    BATCH_SIZES.clear()
    running.append(await built.start(rt_settings))

    async def parked() -> bool:
        return len(await dead_letters(channel, name)) == 1

    await wait_for(parked, 15, "the poison message in the DLQ")
    rows = await effects(db, name)
    assert sorted(r["message_id"] for r in rows) == sorted(msg.message_id for msg in good)
    assert max(BATCH_SIZES) > 1  # batches went through the batch form
    [dead] = await dead_letters(channel, name)
    _assert_same_message(dead, poison)
    assert dead.headers[m.H_ATTEMPTS] == 3
    assert "tests.runtime_consumer:record_user:" in dead.headers[m.H_ERROR_WHERE]
    assert _handled(name, duplicate=False) == len(good)
    assert _failed(name, "dead_lettered", "exhausted", "TransientError") == 1


async def test_domain_error_and_invalid_payload_are_dead_lettered_at_once(
    rt_settings: Settings, name: str, db: asyncpg.Pool, channel: Any, running: list[RunningConsumer]
) -> None:
    running.append(await build_consumer(name).start(rt_settings))
    domain = user_message("domain@example.com")
    invalid = user_message("ok@example.com")
    invalid.body = b'{"user_id": "not-a-uuid"}'
    await publish(channel, domain)
    await publish(channel, invalid)

    async def parked() -> bool:
        return len(await dead_letters(channel, name)) == 2

    await wait_for(parked, 10, "both messages in the DLQ")
    by_id = {d.message_id: d for d in await dead_letters(channel, name)}
    assert by_id[domain.message_id].headers[m.H_ATTEMPTS] == 1
    assert by_id[domain.message_id].headers[m.H_ERROR_TYPE] == "shared.errors.ValidationFailed"
    assert by_id[invalid.message_id].headers[m.H_ERROR_TYPE] == "shared.errors.InvalidMessage"
    assert by_id[invalid.message_id].body == invalid.body
    assert await effects(db, name) == []
    assert _failed(name, "dead_lettered", "permanent", "ValidationFailed") == 1
    assert _failed(name, "dead_lettered", "permanent", "InvalidMessage") == 1
    assert _failed(name, "retried", "transient", "ValidationFailed") == 0


async def test_handler_that_commits_itself_is_refused_and_nothing_half_done_commits(
    rt_settings: Settings, name: str, db: asyncpg.Pool, channel: Any, running: list[RunningConsumer]
) -> None:
    running.append(await build_consumer(name).start(rt_settings))
    rogue = user_message("commits@example.com")
    fine = [user_message(f"ok{i}@example.com") for i in range(20)]
    await publish(channel, rogue)
    for message in fine:
        await publish(channel, message)

    async def parked() -> bool:
        return len(await dead_letters(channel, name)) == 1

    await wait_for(parked, 15, "the rogue message in the DLQ")
    [dead] = await dead_letters(channel, name)
    assert dead.message_id == rogue.message_id
    assert dead.headers[m.H_ERROR_TYPE] == "workers.runtime.sessions.HandlerContractError"
    assert dead.headers[m.H_ATTEMPTS] == 3
    rows = await effects(db, name)
    assert sorted(r["message_id"] for r in rows) == sorted(str(f.message_id) for f in fine)


async def test_transient_failure_is_retried_after_a_delay_then_succeeds(
    rt_settings: Settings, name: str, db: asyncpg.Pool, channel: Any, running: list[RunningConsumer]
) -> None:
    running.append(await build_consumer(name).start(rt_settings))
    message = user_message("transient-once@example.com")
    published = time.monotonic()
    await publish(channel, message)

    async def done() -> bool:
        return len(await effects(db, name)) == 1

    await wait_for(done, 10, "the retried message")
    elapsed = time.monotonic() - published
    [row] = await effects(db, name)
    assert row["message_id"] == message.message_id
    assert row["attempts"] == 1  # the handler saw one failed attempt before this one
    assert elapsed >= 0.3  # the first retry delay
    assert row["correlation_id"] == message.correlation_id
    assert await dead_letters(channel, name) == []


async def test_broker_connection_cut_mid_consumption_resumes_and_loses_nothing(
    rt_settings: Settings, name: str, db: asyncpg.Pool, channel: Any, running: list[RunningConsumer]
) -> None:
    url = urlsplit(rt_settings.broker.url)
    with TcpProxy(url.hostname or "127.0.0.1", url.port or 5672) as proxy:
        via_proxy = urlunsplit(url._replace(
            netloc=f"guest:guest@127.0.0.1:{proxy.port}", query="reconnect_interval=1"
        ))
        # Queued before the consumer starts: published while it ran, all of them could be
        # applied before the cut (the consumer outpaces one publisher).
        built = build_consumer(name, prefetch=8)
        await (await built.start(rt_settings)).stop(grace_s=5)  # declares the queue
        messages = [user_message(f"ok{i}@example.com") for i in range(1500)]
        for message in messages:
            await publish(channel, message)
        consumer = await built.start(rt_settings.replace(rabbitmq_url=via_proxy))
        running.append(consumer)

        async def some_done() -> bool:
            return len(await effects(db, name)) >= 20

        await wait_for(some_done, 20, "consumption to start")
        proxy.cut()
        assert len(await effects(db, name)) < len(messages)  # cut mid-consumption
        await asyncio.sleep(3)
        proxy.restore()

        async def reconnected() -> bool:
            return consumer.reconnects >= 1

        async def all_done() -> bool:
            return len(await effects(db, name)) >= len(messages) and consumer.in_flight == 0

        await wait_for(reconnected, 20, "the consumer to reconnect")
        await wait_for(all_done, 60, "every message after the outage")
        await consumer.stop(grace_s=5)
        running.remove(consumer)
    rows = await effects(db, name)
    assert sorted(r["message_id"] for r in rows) == sorted(msg.message_id for msg in messages)
    assert await ready_count(channel, name) == 0


async def test_channel_closed_by_the_broker_is_reopened_and_consumption_resumes(
    rt_settings: Settings, name: str, db: asyncpg.Pool, channel: Any, running: list[RunningConsumer]
) -> None:
    consumer = await build_consumer(name, prefetch=8).start(rt_settings)
    running.append(consumer)
    first = [user_message(f"a{i}@example.com") for i in range(50)]
    for message in first:
        await publish(channel, message)

    async def done(n: int) -> bool:
        return len(await effects(db, name)) >= n and consumer.in_flight == 0

    await wait_for(lambda: done(len(first)), 20, "the first messages")
    # A channel error (an ack of a tag never delivered): the broker closes the consuming
    # channel; the robust channel reopens it and the runtime must consume again on it.
    subscription = consumer._subscription
    assert subscription is not None
    underlay = await subscription._channel.get_underlay_channel()
    await underlay.basic_ack(10_000_000)
    second = [user_message(f"b{i}@example.com") for i in range(50)]
    for message in second:
        await publish(channel, message)
    await wait_for(lambda: done(len(first) + len(second)), 30, "messages after the reopen")
    rows = await effects(db, name)
    assert sorted(r["message_id"] for r in rows) == sorted(
        str(msg.message_id) for msg in first + second
    )


async def test_work_queue_deleted_and_recreated_consumption_resumes(
    rt_settings: Settings, name: str, db: asyncpg.Pool, channel: Any, running: list[RunningConsumer]
) -> None:
    built = build_consumer(name, prefetch=8)
    consumer = await built.start(rt_settings)
    running.append(consumer)
    # Deleting the queue makes the broker cancel the consumer (basic.cancel); while it is
    # missing, consuming again fails (and closes the channel) a few times.
    await channel.queue_delete(name)
    await asyncio.sleep(4)
    await declare_topology(channel, topology_of(
        (built.spec_for(rt_settings),), parse_retry_delays(rt_settings.worker.retry_delays)
    ))
    messages = [user_message(f"c{i}@example.com") for i in range(30)]
    for message in messages:
        await publish(channel, message)

    async def all_done() -> bool:
        return len(await effects(db, name)) >= len(messages) and consumer.in_flight == 0

    await wait_for(all_done, 30, "consumption on the re-created queue")
    rows = await effects(db, name)
    assert sorted(r["message_id"] for r in rows) == sorted(str(m.message_id) for m in messages)


@pytest.mark.slow
async def test_sixty_second_blocking_handler_keeps_the_connection_up(
    rt_settings: Settings, name: str, db: asyncpg.Pool, channel: Any, running: list[RunningConsumer]
) -> None:
    # Heartbeat 5 s: a blocked event loop would lose the connection within ~15 s.
    heartbeat_url = rt_settings.broker.url + "?heartbeat=5"
    # One message per transaction, as for OCR: a long job must not hold others' commits.
    consumer = await build_consumer(name, batch_max=1).start(
        rt_settings.replace(rabbitmq_url=heartbeat_url)
    )
    running.append(consumer)
    blocking = user_message("block60@example.com")
    await publish(channel, blocking)
    await asyncio.sleep(1)
    others = [user_message(f"ok{i}@example.com") for i in range(5)]
    for message in others:
        await publish(channel, message)

    async def others_done() -> bool:
        return len(await effects(db, name)) == len(others)

    await wait_for(others_done, 10, "the other messages, while the long handler runs")

    async def blocking_done() -> bool:
        return len(await effects(db, name)) == len(others) + 1 and consumer.in_flight == 0

    await wait_for(blocking_done, 75, "the 60-second handler")
    assert consumer.reconnects == 0
    assert not consumer.connection.is_closed
    await consumer.stop(grace_s=5)
    running.remove(consumer)
    # The ack went out on the original channel: nothing waits for redelivery.
    assert await ready_count(channel, name) == 0
    assert len(await effects(db, name)) == len(others) + 1


async def test_sigterm_finishes_in_flight_message_then_exits(
    rt_settings: Settings, name: str, db: asyncpg.Pool, channel: Any, running: list[RunningConsumer]
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.runtime_consumer", name], env=env_of(rt_settings),
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        await wait_for(
            lambda: _queue_exists(rt_settings.broker.url, name), 20, "the subprocess to declare"
        )
        await asyncio.sleep(0.5)
        user = uuid.uuid4()  # one aggregate: the three run one after another, 2 s each
        messages = [user_message(f"slow{i}@example.com", user_id=user) for i in range(3)]
        for message in messages:
            await publish(channel, message)
        await asyncio.sleep(1)  # the first is in its handler now
        proc.send_signal(signal.SIGTERM)
        exit_code = await asyncio.to_thread(proc.wait, 20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert exit_code == 0
    rows = await effects(db, name)
    # In-flight work finished and committed; what was not started stays in the queue.
    assert [r["message_id"] for r in rows] == [msg.message_id for msg in messages[: len(rows)]]
    assert 1 <= len(rows) < 3
    assert await ready_count(channel, name) == 3 - len(rows)


def _assert_same_message(
    dead: aio_pika.abc.AbstractIncomingMessage, sent: aio_pika.Message
) -> None:
    assert dead.message_id == sent.message_id
    assert dead.body == sent.body
    assert dead.type == sent.type
    assert dead.content_type == sent.content_type
    assert dead.correlation_id == sent.correlation_id
    assert dead.timestamp == sent.timestamp
    for key, value in sent.headers.items():
        assert dead.headers[key] == value


async def _queue_exists(url: str, name: str) -> bool:
    connection = await aio_pika.connect(url)
    try:
        probe = await connection.channel()
        await probe.declare_queue(name, passive=True)
    except aio_pika.exceptions.ChannelClosed:
        return False
    finally:
        await connection.close()
    return True


def _handled(name: str, *, duplicate: bool) -> float:
    labels = {
        "consumer": name, "queue": name, "event_type": "user.registered",
        "duplicate": str(duplicate),
    }
    return REGISTRY.get_sample_value("ams_worker_messages_handled_total", labels) or 0.0


def _failed(name: str, outcome: str, reason: str, error_type: str) -> float:
    labels = {
        "consumer": name, "queue": name, "event_type": "user.registered", "outcome": outcome,
        "reason": reason, "error_type": error_type,
    }
    return REGISTRY.get_sample_value("ams_worker_messages_failed_total", labels) or 0.0


async def _exists(path: Path) -> bool:
    return path.exists()


async def test_oversized_and_forged_messages_end_alone_and_others_flow(
    rt_settings: Settings, name: str, db: asyncpg.Pool, channel: Any, running: list[RunningConsumer]
) -> None:
    """A body over the size limit is dead-lettered with the reason; a forged attempt count
    (3e38) does not stop its delivery; the good messages around them are applied."""
    running.append(await build_consumer(name).start(rt_settings))
    big = user_message("big@example.com")
    big.body = big.body[:-1] + b', "pad": "' + b"x" * (MAX_BODY_BYTES + 10) + b'"}'
    forged = user_message("forged@example.com")
    assert forged.headers is not None
    forged.headers[m.H_ATTEMPTS] = 3e38
    good = [user_message(f"good{i}@example.com") for i in range(5)]
    for message in [good[0], big, good[1], forged, *good[2:]]:
        await publish(channel, message)

    async def settled() -> bool:
        return len(await effects(db, name)) == 6 and len(await dead_letters(channel, name)) == 1

    await wait_for(settled, 15, "six effects and one dead letter")
    [dead] = await dead_letters(channel, name)
    assert dead.message_id == big.message_id
    assert dead.headers[m.H_ERROR_TYPE] == "shared.errors.InvalidMessage"
    assert "over the limit" in str(dead.headers[m.H_ERROR_MESSAGE])
