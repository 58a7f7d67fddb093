"""Relay benchmark: throughput and commit->delivery latency beside a bare aio-pika publisher.

    python bench/relay.py [--quick] [--events N] [--rate 500] [--seconds S]

Everything runs against the local PostgreSQL and RabbitMQ in its own database and vhost
(removed afterwards), into one quorum queue bound to the events:

1. ``raw_eps``: a bare aio-pika publisher (persistent messages, publisher confirms,
   ``mandatory``, confirms pipelined in windows) publishing N messages.
2. ``relay_eps``: N events committed to the outbox in one transaction; the relay
   (``python -m outbox``, a separate process as in production) publishes them; the time
   runs from the commit to the moment the outbox is empty, i.e. every row confirmed by
   the broker and deleted.
3. ``p50_ms``/``p99_ms``: a steady offered load (one event per transaction, ``--rate``
   per second); latency from each transaction's commit to the event's delivery to a
   consumer in another process (commit -> confirm -> delivery, with a producer and a
   consumer process competing for the same two cores).
   ``confirm_p50_ms``/``confirm_p99_ms``: the relay's own histogram for the same events,
   from the row's insert (before the commit) to the broker's confirm, interpolated.
   ``raw_p50_ms``/``raw_p99_ms``: the same offered load published directly (bare
   aio-pika, confirmed), publish -> delivery: the broker's own floor on this machine.

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import re
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aio_pika
import asyncpg
import httpx

from outbox import add_event
from shared.config import Settings
from shared.db import asyncpg_dsn, create_engine
from shared.events import UserRegistered
from shared.messaging import EVENTS_EXCHANGE
from tests.relay_support import start_relay, stop_relay, wait_for_relays
from tests.support import free_port, isolated_settings

QUEUE = "bench.relay"
BODY = json.dumps({"user_id": str(uuid.uuid4()), "email": "bench@example.org", "display_name": "b"})


async def declare(channel: aio_pika.abc.AbstractChannel) -> aio_pika.abc.AbstractQueue:
    exchange = await channel.declare_exchange(EVENTS_EXCHANGE, "topic", durable=True)
    queue = await channel.declare_queue(QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
    await queue.bind(exchange, "user.#")
    return queue


async def raw_publisher(settings: Settings, n: int, window: int = 1000) -> float:
    connection = await aio_pika.connect(settings.rabbitmq_url)
    channel = await connection.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(EVENTS_EXCHANGE)
    started = time.perf_counter()
    for offset in range(0, n, window):
        await asyncio.gather(
            *(
                exchange.publish(
                    aio_pika.Message(
                        BODY.encode(),
                        message_id=str(uuid.uuid4()),
                        type="user.registered",
                        content_type="application/json",
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        headers={"x-aggregate-type": "user", "x-aggregate-id": str(i)},
                    ),
                    routing_key="user.registered",
                    mandatory=True,
                )
                for i in range(offset, min(n, offset + window))
            )
        )
    elapsed = time.perf_counter() - started
    await connection.close()
    return n / elapsed


async def preload_and_relay(settings: Settings, n: int) -> float:
    conn = await asyncpg.connect(asyncpg_dsn(settings.auth_database_url))
    relay = start_relay(settings)
    try:
        await wait_for_relays(settings, 1)
        await asyncio.sleep(1.0)  # the relay owns its partitions and sits idle
        async with conn.transaction():
            # The writer's own SQL, once per event, inside one transaction.
            await conn.execute(
                """
                INSERT INTO outbox (event_id, event_type, routing_key, aggregate_type,
                    aggregate_id, partition, schema_version, payload)
                SELECT gen_random_uuid(), 'user.registered', 'user.registered', 'user',
                       g::text, g % 16, 1, $1::jsonb
                FROM generate_series(1, $2) AS g
                """,
                BODY,
                n,
            )
        started = time.perf_counter()
        while await conn.fetchval("SELECT EXISTS (SELECT 1 FROM outbox)"):
            await asyncio.sleep(0.005)
        return n / (time.perf_counter() - started)
    finally:
        stop_relay(relay)
        await conn.close()


def _consume(url: str, expected: int, seconds: float, out: Connection) -> None:
    """Consumer process: record when each message arrives (monotonic clock, shared)."""

    async def consume() -> dict[str, float]:
        arrived: dict[str, float] = {}
        done = asyncio.Event()
        connection = await aio_pika.connect(url)
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=1000)
        queue = await channel.get_queue(QUEUE)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            arrived.setdefault(str(message.message_id), time.perf_counter())
            await message.ack()
            if len(arrived) >= expected:
                done.set()

        await queue.consume(on_message)
        out.send("ready")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), seconds + 30)
        await connection.close()
        return arrived

    out.send(asyncio.run(consume()))


async def _offered_load(
    settings: Settings, rate: int, seconds: float, one: Callable[[], Awaitable[tuple[str, float]]]
) -> list[float]:
    """Call ``one`` ``rate`` times a second; each returns (message id, its start time).
    A consumer in another process records arrivals; returns start -> delivery in ms."""
    total = int(rate * seconds)
    receiver, sender = multiprocessing.get_context("spawn").Pipe(duplex=False)
    consumer = multiprocessing.get_context("spawn").Process(
        target=_consume, args=(settings.rabbitmq_url, total, seconds, sender)
    )
    consumer.start()
    try:
        await asyncio.to_thread(receiver.recv)  # the consumer is subscribed
        tasks = []
        start = time.perf_counter()
        for i in range(total):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        sent = dict(await asyncio.gather(*tasks))
        arrived: dict[str, float] = await asyncio.to_thread(receiver.recv)
    finally:
        consumer.join(30)
    missing = set(sent) - set(arrived)
    if missing:
        raise SystemExit(f"{len(missing)} messages never arrived")
    return [(arrived[m] - sent[m]) * 1000 for m in sent]


def histogram_quantile(text: str, name: str, q: float) -> float:
    """Quantile (ms) of a Prometheus histogram, interpolated inside its bucket."""
    buckets = [
        (float(le), float(count))
        for le, count in re.findall(name + r'_bucket\{[^}]*le="([^"]+)"\} (\S+)', text)
        if le != "+Inf"
    ]
    total = float(re.search(name + r"_count\{[^}]*\} (\S+)", text).group(1))  # type: ignore[union-attr]
    rank, lower, below = q * total, 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            share = (rank - below) / (count - below) if count > below else 1.0
            return (lower + (upper - lower) * share) * 1000
        lower, below = upper, count
    return buckets[-1][0] * 1000


async def relay_latency(
    settings: Settings, rate: int, seconds: float, confirm_ms: dict[str, float]
) -> list[float]:
    """Single-event transactions through the outbox and the relay: commit -> delivery.
    ``confirm_ms`` receives the relay's own insert -> confirm p50/p99 (its histogram)."""
    engine = create_engine(settings.auth_database_url, pool_size=20)

    async def one() -> tuple[str, float]:
        # A Core connection, not an ORM session: the producer shares the two cores with
        # PostgreSQL, RabbitMQ, the relay and the consumer, so it must stay light.
        async with engine.connect() as conn:
            await conn.begin()
            event_id = await add_event(
                conn, UserRegistered(user_id=uuid.uuid4(), email="l@example.org")
            )
            # Timed as COMMIT is sent: the row is invisible to the relay before that, and
            # a busy producer loop cannot make the figure look better than it is.
            committing = time.perf_counter()
            await conn.commit()
        return str(event_id), committing

    port = free_port()
    relay = start_relay(settings, relay_metrics_port=port)
    try:
        await wait_for_relays(settings, 1)
        await asyncio.sleep(1.0)
        latencies = await _offered_load(settings, rate, seconds, one)
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
        for q in (0.5, 0.99):
            name = "ams_outbox_commit_to_confirm_seconds"
            confirm_ms[f"p{int(q * 100)}"] = histogram_quantile(text, name, q)
        return latencies
    finally:
        stop_relay(relay)
        await engine.dispose()


async def raw_latency(settings: Settings, rate: int, seconds: float) -> list[float]:
    """The floor: a bare aio-pika publish (confirmed) at the same rate: publish -> delivery."""
    connection = await aio_pika.connect(settings.rabbitmq_url)
    channel = await connection.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(EVENTS_EXCHANGE)

    async def one() -> tuple[str, float]:
        message_id, started = str(uuid.uuid4()), time.perf_counter()
        message = aio_pika.Message(
            BODY.encode(), message_id=message_id, delivery_mode=aio_pika.DeliveryMode.PERSISTENT
        )
        await exchange.publish(message, routing_key="user.registered", mandatory=True)
        return message_id, started

    try:
        return await _offered_load(settings, rate, seconds, one)
    finally:
        await connection.close()


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 10) - 1]


async def run(settings: Settings, events: int, rate: int, seconds: float) -> dict[str, object]:
    connection = await aio_pika.connect(settings.rabbitmq_url)
    channel = await connection.channel()
    queue = await declare(channel)
    raw_eps = await raw_publisher(settings, events)
    await queue.purge()
    relay_eps = await preload_and_relay(settings, events)
    await queue.purge()
    raw_latencies = await raw_latency(settings, rate, seconds)
    await queue.purge()
    confirm_ms: dict[str, float] = {}
    latencies = await relay_latency(settings, rate, seconds, confirm_ms)
    await queue.delete(if_unused=False, if_empty=False)
    await connection.close()
    return {
        "events": events,
        "raw_eps": round(raw_eps),
        "relay_eps": round(relay_eps),
        "ratio": round(relay_eps / raw_eps, 3),
        "offered_rate": rate,
        "latency_samples": len(latencies),
        "p50_ms": round(percentile(latencies, 50), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "confirm_p50_ms": round(confirm_ms["p50"], 2),
        "confirm_p99_ms": round(confirm_ms["p99"], 2),
        "raw_p50_ms": round(percentile(raw_latencies, 50), 2),
        "raw_p99_ms": round(percentile(raw_latencies, 99), 2),
        "queue_type": "quorum",
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small run, under a minute")
    parser.add_argument("--events", type=int, help="events for the throughput runs")
    parser.add_argument("--rate", type=int, default=500, help="offered load, events/s")
    parser.add_argument("--seconds", type=float, help="duration of the latency run")
    args = parser.parse_args()
    events = args.events or (10_000 if args.quick else 50_000)
    seconds = args.seconds or (5.0 if args.quick else 20.0)
    with isolated_settings("bench") as settings:
        result = asyncio.run(run(settings, events, args.rate, seconds))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
