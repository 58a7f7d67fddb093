"""Consumer runtime throughput beside a bare aio-pika consume-and-ack loop.

Both read pre-filled quorum queues of the same broker in the same process, with the
same prefetch and the same event loop as ``python -m workers`` (asyncio's). The runtime
does the full job per message: decode and validate, inbox row plus a one-row effect in
one PostgreSQL transaction, commit, ack. Messages spread over a few hundred aggregates,
so per-aggregate order is kept while different aggregates run in parallel. Runs in its
own vhost and databases (``tests.support.isolated_settings``), removed afterwards.

The two are measured in alternating rounds (raw first in odd rounds, the runtime first
in even ones), so that drift on a shared machine hits both alike; every round starts
from new queues and empty tables. The result is the median of each, and the median of
the per-round ratios.

    python bench/consumer.py [--quick] [--messages N] [--rounds R] [--prefetch P]
                             [--effect row|none]

``--effect none`` measures the runtime with a handler that writes nothing (the inbox row,
the transaction and the ack remain): the runtime's own cost beside the bare loop.

The last line printed is one JSON object: consumer_mps, raw_mps, ratio, every round,
and the setup.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aio_pika
import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from shared import messaging as m
from shared.config import Settings
from shared.db import asyncpg_dsn
from shared.events import UserRegistered, encode
from tests.support import isolated_settings
from workers.runtime import Consumer, Handler, MessageContext

AGGREGATES = 500
RAW_QUEUE = "bench.raw"
NAME = "bench"


_EFFECT = text("INSERT INTO bench_effects (message_id, user_id) VALUES (:m, :u)")


async def effect(session: AsyncSession, message: UserRegistered, ctx: MessageContext) -> None:
    await session.execute(_EFFECT, {"m": ctx.message_id, "u": message.user_id})


def messages(n: int) -> list[aio_pika.Message]:
    users = [uuid.uuid4() for _ in range(AGGREGATES)]
    out = []
    for i in range(n):
        event = UserRegistered(user_id=users[i % AGGREGATES], email=f"u{i}@example.com")
        out.append(aio_pika.Message(
            encode(event), message_id=str(uuid.uuid4()), type=event.event_type,
            content_type=m.CONTENT_TYPE, delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers={m.H_AGGREGATE_ID: event.aggregate_id, m.H_SCHEMA_VERSION: 1},
        ))
    return out


async def fill(channel: aio_pika.abc.AbstractChannel, queue: str, n: int) -> None:
    for message in messages(n):
        await channel.default_exchange.publish(message, routing_key=queue)
    # Polling the broker: no event to wait for across processes.
    while (await channel.declare_queue(queue, passive=True)).declaration_result.message_count < n:
        await asyncio.sleep(0.1)


async def raw_rate(settings: Settings, n: int, prefetch: int) -> float:
    connection = await aio_pika.connect(settings.rabbitmq_url)
    try:
        channel = await connection.channel(publisher_confirms=False)
        await fill(channel, RAW_QUEUE, n)
        consume = await connection.channel()
        await consume.set_qos(prefetch_count=prefetch)
        queue = await consume.declare_queue(RAW_QUEUE, passive=True)
        done = asyncio.Event()
        count = 0

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal count
            await message.ack()
            count += 1
            if count == n:
                done.set()

        started = time.perf_counter()
        await queue.consume(on_message)
        await asyncio.wait_for(done.wait(), 300)
        return n / (time.perf_counter() - started)
    finally:
        await connection.close()


async def no_effect(session: AsyncSession, message: UserRegistered, ctx: MessageContext) -> None:
    return None


HANDLERS = {"row": effect, "none": no_effect}


def bench_consumer(prefetch: int, handler: Handler) -> Consumer:
    return Consumer(NAME, "apidb", {UserRegistered: handler}, prefetch=prefetch)


async def runtime_rate(settings: Settings, n: int, prefetch: int, handler: Handler) -> float:
    """Fill the work queue, then time a cold start (connect, consume) to the n-th effect."""
    consumer = bench_consumer(prefetch, handler)
    connection = await aio_pika.connect(settings.rabbitmq_url)
    try:
        channel = await connection.channel(publisher_confirms=False)
        await fill(channel, NAME, n)
    finally:
        await connection.close()
    db = await asyncpg.connect(asyncpg_dsn(settings.users_database_url))
    try:
        running = await consumer.start(settings)
        started = time.perf_counter()  # connected and consuming: the same start as the raw loop
        while await db.fetchval("SELECT count(*) FROM inbox") < n:
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
        await running.stop(grace_s=5)
    finally:
        await db.close()
    return n / elapsed


async def prepare(settings: Settings) -> None:
    db = await asyncpg.connect(asyncpg_dsn(settings.users_database_url))
    try:
        await db.execute(
            "CREATE TABLE bench_effects (message_id text PRIMARY KEY, user_id uuid NOT NULL)"
        )
    finally:
        await db.close()


async def fresh_round(settings: Settings, prefetch: int, handler: Handler) -> None:
    """New, empty queues and tables for each round, so that no round inherits the work of
    the ones before it (a quorum queue's log, a growing effects table)."""
    db = await asyncpg.connect(asyncpg_dsn(settings.users_database_url))
    try:
        await db.execute("TRUNCATE bench_effects, inbox")
    finally:
        await db.close()
    connection = await aio_pika.connect(settings.rabbitmq_url)
    try:
        channel = await connection.channel()
        for queue in (RAW_QUEUE, NAME):
            await channel.queue_delete(queue)
        await channel.declare_queue(RAW_QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
    finally:
        await connection.close()
    await (await bench_consumer(prefetch, handler).start(settings)).stop(grace_s=5)  # declares NAME


async def run(
    settings: Settings, n: int, rounds: int, prefetch: int, effect_name: str
) -> dict[str, object]:
    handler = HANDLERS[effect_name]
    await prepare(settings)
    raws: list[float] = []
    fulls: list[float] = []
    for round_no in range(1, rounds + 1):
        await fresh_round(settings, prefetch, handler)
        if round_no % 2:
            raw = await raw_rate(settings, n, prefetch)
            full = await runtime_rate(settings, n, prefetch, handler)
        else:
            full = await runtime_rate(settings, n, prefetch, handler)
            raw = await raw_rate(settings, n, prefetch)
        raws.append(raw)
        fulls.append(full)
        print(
            f"round {round_no}: raw aio-pika consume+ack {raw:,.0f} msg/s, "
            f"runtime (inbox + effect + ack) {full:,.0f} msg/s, ratio {full / raw:.2f}",
            flush=True,
        )
    return {
        "consumer_mps": round(statistics.median(fulls), 1),
        "raw_mps": round(statistics.median(raws), 1),
        "ratio": round(statistics.median(f / r for f, r in zip(fulls, raws, strict=True)), 3),
        "rounds": [
            {"consumer_mps": round(f, 1), "raw_mps": round(r, 1)}
            for f, r in zip(fulls, raws, strict=True)
        ],
        "messages_per_round": n, "prefetch": prefetch, "db_pool_size": settings.db_pool_size,
        "batch_max": settings.worker_batch_max, "queue_type": "quorum",
        "aggregates": AGGREGATES, "event_loop": "asyncio",
        "effect": effect_name,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small run, under a minute")
    parser.add_argument("--messages", type=int, default=None, help="messages per round")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument(
        "--prefetch", type=int, default=None, help="both loops; default WORKER_PREFETCH's"
    )
    parser.add_argument("--pool", type=int, default=16, help="database connections")
    parser.add_argument("--batch-max", type=int, default=None, help="WORKER_BATCH_MAX")
    parser.add_argument(
        "--effect", choices=sorted(HANDLERS), default="row",
        help="row: one INSERT per message (default); none: the inbox row only",
    )
    args = parser.parse_args()
    n = args.messages or (5000 if args.quick else 20000)
    rounds = args.rounds or (3 if args.quick else 5)
    with isolated_settings(
        "bench", worker_metrics_port=0, db_pool_size=args.pool, log_level="WARNING",
        **({"worker_batch_max": args.batch_max} if args.batch_max else {}),
    ) as settings:
        prefetch = args.prefetch or settings.worker_prefetch
        result = asyncio.run(run(settings, n, rounds, prefetch, args.effect))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
