"""Consumer runtime throughput beside a bare aio-pika consume-and-ack loop.

Both read pre-filled quorum queues of the same broker in the same process, with the
same prefetch and the same event loop as ``python -m workers`` (``shared.eventloop``:
uvloop where installed). The runtime does the full job per message: decode and validate,
inbox row plus a one-row effect in one PostgreSQL transaction, commit, ack. Messages
spread over a few hundred aggregates, so per-aggregate order is kept while different
aggregates run in parallel. Runs in its own vhost and databases
(``tests.support.isolated_settings``), removed afterwards.

The two are measured in alternating rounds (raw first in odd rounds, the runtime first
in even ones), so that drift on a shared machine hits both alike; with ``--tracing``'s
third measurement the order rotates, so that in every three rounds each measurement runs
first, second and third once (before, tracing on ran first or last and off always
second: the on/off ratio of the two kinds of round differed by more than the cost of
tracing). Every round starts from new queues and empty tables. The result is the median
of each, and the median of the per-round ratios.

The runtime runs as deployed for throughput: one partition per core (``--partitions``,
``WORKER_PARTITIONS``), each a process of its own consuming its partition queue, as
``python -m workers NAME`` starts them. The partition processes are started and idle
before the clock starts; it starts when they are told to connect and consume, so their
connecting counts against them. ``--partitions 1`` measures one process, in this one.

    python bench/consumer.py [--quick] [--messages N] [--rounds R] [--prefetch P]
                             [--effect row|row-each|none] [--partitions K]
                             [--tracing [--sampled F]]

The effect handler is batch-aware (``workers.runtime.sessions.Batched``), as the profiles
worker's is: a batch's effect rows go in one statement. ``--effect row-each`` measures the
same effect through a plain handler, one statement per message. ``--effect none`` measures
the runtime with a handler that writes nothing (the inbox row, the transaction and the ack
remain): the runtime's own cost beside the bare loop.

``--tracing`` adds a third measurement to every round: the runtime with tracing on
(``TRACING_ENABLED``, every message sampled, spans exported over OTLP/HTTP to a local
receiver, :mod:`bench.otlp_sink`), beside the same runtime with tracing off, on the same
messages, which then carry a ``traceparent`` as events of traced requests do. It reports
``tracing_on_mps`` and ``tracing_ratio`` (on / off, medians of the rounds), and the CPU
time the runtime spent per message, on and off (``tracing_cpu_us``: every thread of the
runtime's processes, from the start of the run to the end of their shutdown, whose flush
exports the spans still queued, as a process that runs on exports them in time; the
exporter is the production one, ``BatchSpanProcessor`` and ``OTLPSpanExporter`` with their
defaults). On a shared machine, CPU per message drifts less than a rate. ``--sampled F``
sets the sampled flag on a share F of those traceparents (default 1: every message is
recorded), as head sampling at the API would (``parentbased_traceidratio``).

The last line printed is one JSON object: consumer_mps, raw_mps, ratio, every round,
and the setup.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aio_pika
import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from bench.otlp_sink import otlp_sink
from shared import eventloop
from shared import messaging as m
from shared.config import Settings
from shared.db import asyncpg_dsn
from shared.events import UserRegistered, encode
from shared.topology import ConsumerSpec
from shared.tracing import configure_tracing, shutdown_tracing
from tests.support import env_for, isolated_settings
from workers.runtime.consumer import Consumer
from workers.runtime.context import MessageContext
from workers.runtime.sessions import Batched, Handler

AGGREGATES = 500
RAW_QUEUE = "bench.raw"
NAME = "bench"


_EFFECT = text("INSERT INTO bench_effects (message_id, user_id) VALUES (:m, :u)")


async def effect(session: AsyncSession, message: UserRegistered, ctx: MessageContext) -> None:
    await session.execute(_EFFECT, {"m": ctx.message_id, "u": message.user_id})


_EFFECTS = text(
    "INSERT INTO bench_effects (message_id, user_id)"
    " SELECT * FROM unnest(CAST(:m AS text[]), CAST(:u AS uuid[]))"
)


async def effects(
    session: AsyncSession, items: Sequence[tuple[UserRegistered, MessageContext]]
) -> None:
    """The batch form of :func:`effect`: the same rows, one statement (as the profiles
    worker creates a batch's profiles)."""
    await session.execute(
        _EFFECTS, {"m": [ctx.message_id for _, ctx in items], "u": [m.user_id for m, _ in items]}
    )


TRACED = False
"""--tracing: the messages carry a traceparent, as events written by traced requests do."""
SAMPLED = 1.0
"""--sampled: the share of those traceparents whose sampled flag is set (head sampling at
the API, e.g. OTEL_TRACES_SAMPLER=parentbased_traceidratio); the rest are not recorded."""


def messages(n: int) -> list[aio_pika.Message]:
    users = [uuid.uuid4() for _ in range(AGGREGATES)]
    out = []
    for i in range(n):
        event = UserRegistered(user_id=users[i % AGGREGATES], email=f"u{i}@example.com")
        headers: dict[str, object] = {
            m.H_AGGREGATE_ID: event.aggregate_id, m.H_SCHEMA_VERSION: 1,
            m.H_AGGREGATE_SLOT: m.aggregate_slot(event.aggregate_id),
        }
        if TRACED:
            sampled = int((i + 1) * SAMPLED) > int(i * SAMPLED)  # spread evenly
            flags = "01" if sampled else "00"
            headers[m.H_TRACEPARENT] = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-{flags}"
        out.append(aio_pika.Message(
            encode(event), message_id=str(uuid.uuid4()), type=event.event_type,
            content_type=m.CONTENT_TYPE, delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers=headers,  # type: ignore[arg-type]
        ))
    return out


async def wait_queued(channel: aio_pika.abc.AbstractChannel, queues: list[str], n: int) -> None:
    """Until ``queues`` hold ``n`` messages together (polling: no event to wait for)."""
    while sum([
        (await channel.declare_queue(q, passive=True)).declaration_result.message_count or 0
        for q in queues
    ]) < n:
        await asyncio.sleep(0.1)


async def fill(channel: aio_pika.abc.AbstractChannel, queue: str, n: int) -> None:
    for message in messages(n):
        await channel.default_exchange.publish(message, routing_key=queue)
    await wait_queued(channel, [queue], n)


async def raw_rate(settings: Settings, n: int, prefetch: int) -> float:
    connection = await aio_pika.connect(settings.broker.url)
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


HANDLERS: dict[str, Handler] = {
    "row": Batched(effect, effects), "row-each": effect, "none": no_effect,
}


def bench_consumer(prefetch: int, handler: Handler, partitions: int) -> Consumer:
    spec = ConsumerSpec(NAME, "apidb", (UserRegistered.event_type,))
    return Consumer(spec, {UserRegistered: handler}, prefetch=prefetch, partitions=partitions)


async def fill_consumer(settings: Settings, n: int, partitions: int) -> None:
    """Publish through ``events``, as the relay does; wait until every partition holds its share."""
    queues = [NAME] if partitions == 1 else [f"{NAME}.p{i}" for i in range(partitions)]
    connection = await aio_pika.connect(settings.broker.url)
    try:
        channel = await connection.channel(publisher_confirms=False)
        exchange = await channel.get_exchange(m.EVENTS_EXCHANGE)
        for message in messages(n):
            await exchange.publish(message, routing_key=UserRegistered.event_type)
        await wait_queued(channel, queues, n)
    finally:
        await connection.close()


async def wait_applied(settings: Settings, n: int) -> None:
    db = await asyncpg.connect(asyncpg_dsn(settings.database.users_url))
    try:
        while await db.fetchval("SELECT count(*) FROM inbox") < n:
            await asyncio.sleep(0.05)
    finally:
        await db.close()


async def runtime_rate(
    settings: Settings, n: int, prefetch: int, effect_name: str, partitions: int
) -> tuple[float, float]:
    """Fill the work queue(s), then time a cold start (connect, consume) to the n-th effect.
    Returns the rate and the runtime's CPU seconds per message (start to shutdown)."""
    await truncate(settings)
    await fill_consumer(settings, n, partitions)
    if partitions > 1:
        return await partitioned_rate(settings, n, prefetch, effect_name, partitions)
    configure_tracing(settings.observability, service="bench-consumer")
    cpu = time.process_time()  # this process: the runtime, and the polls of wait_applied
    try:
        consumer = bench_consumer(prefetch, HANDLERS[effect_name], partitions)
        running = await consumer.start(settings)
        started = time.perf_counter()  # connected and consuming: the same start as the raw loop
        await wait_applied(settings, n)
        elapsed = time.perf_counter() - started
        await running.stop(grace_s=5)
    finally:
        shutdown_tracing()
    return n / elapsed, (time.process_time() - cpu) / n


async def partitioned_rate(
    settings: Settings, n: int, prefetch: int, effect_name: str, partitions: int
) -> tuple[float, float]:
    """One process per partition, as ``python -m workers`` runs them; each reports the CPU
    time it spent from "go" to the end of its shutdown."""
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--serve-partition", str(i), "--partitions",
            str(partitions), "--prefetch", str(prefetch), "--effect", effect_name,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            env=env_for(settings),
        )
        for i in range(partitions)
    ]
    try:
        for proc in procs:  # imported and idle
            assert proc.stdout is not None
            await proc.stdout.readline()
        started = time.perf_counter()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
        await wait_applied(settings, n)
        elapsed = time.perf_counter() - started
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        cpu = 0.0
        for proc in procs:
            assert proc.stdout is not None
            line = await proc.stdout.readline()
            await proc.wait()
            cpu += float(line.split()[1]) if line.startswith(b"cpu ") else float("nan")
    return n / elapsed, cpu / n


async def serve_partition(partition: int, partitions: int, prefetch: int, effect: str) -> None:
    """A partition process: wait for "go" on stdin, consume until SIGTERM."""
    settings = Settings.from_env()
    configure_tracing(settings.observability, service=f"bench-consumer-p{partition}")
    consumer = bench_consumer(prefetch, HANDLERS[effect], partitions)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    cpu = time.process_time()  # every thread: the exporter's as well
    running = await consumer.start(settings, partition)
    await stop.wait()
    await running.stop(grace_s=5)
    shutdown_tracing()  # flushes the last spans
    print(f"cpu {time.process_time() - cpu}", flush=True)


async def prepare(settings: Settings) -> None:
    db = await asyncpg.connect(asyncpg_dsn(settings.database.users_url))
    try:
        await db.execute(
            "CREATE TABLE bench_effects (message_id text PRIMARY KEY, user_id uuid NOT NULL)"
        )
    finally:
        await db.close()


async def truncate(settings: Settings) -> None:
    db = await asyncpg.connect(asyncpg_dsn(settings.database.users_url))
    try:
        await db.execute("TRUNCATE bench_effects, inbox, outbox")
    finally:
        await db.close()


async def fresh_round(settings: Settings, prefetch: int, handler: Handler, partitions: int) -> None:
    """New, empty queues and tables for each round, so that no round inherits the work of
    the ones before it (a quorum queue's log, a growing effects table)."""
    await truncate(settings)
    consumer = bench_consumer(prefetch, handler, partitions)
    connection = await aio_pika.connect(settings.broker.url)
    try:
        channel = await connection.channel()
        for queue in (RAW_QUEUE, *(q.name for q in consumer.spec_for(settings).queues(()))):
            await channel.queue_delete(queue)
        await channel.declare_queue(RAW_QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
    finally:
        await connection.close()
    await (await consumer.start(settings)).stop(grace_s=5)  # declares the consumer's queues


async def run(
    settings: Settings, n: int, rounds: int, prefetch: int, effect_name: str, partitions: int,
    traced: Settings | None = None,
) -> dict[str, object]:
    """``traced``: the same settings with tracing on, measured beside the runtime (--tracing)."""
    handler = HANDLERS[effect_name]
    await prepare(settings)
    raws: list[float] = []
    fulls: list[float] = []
    ons: list[float] = []
    cpus: dict[str, list[float]] = {"off": [], "on": []}
    for round_no in range(1, rounds + 1):
        await fresh_round(settings, prefetch, handler, partitions)
        measures = {
            "raw": lambda: raw_rate(settings, n, prefetch),
            "full": lambda: runtime_rate(settings, n, prefetch, effect_name, partitions),
        }
        if traced is not None:
            measures["on"] = lambda: runtime_rate(traced, n, prefetch, effect_name, partitions)
        names = list(measures)
        shift = (round_no - 1) % len(names)
        order = names[shift:] + names[:shift]
        results = {name: await measures[name]() for name in order}
        rates = {name: r if isinstance(r, float) else r[0] for name, r in results.items()}
        cpu = {name: r[1] for name, r in results.items() if not isinstance(r, float)}
        raws.append(rates["raw"])
        fulls.append(rates["full"])
        line = (
            f"round {round_no}: raw aio-pika consume+ack {rates['raw']:,.0f} msg/s, "
            f"runtime (inbox + effect + ack) {rates['full']:,.0f} msg/s, "
            f"ratio {rates['full'] / rates['raw']:.2f}"
        )
        if traced is not None:
            ons.append(rates["on"])
            on = rates["on"]
            line += f"; tracing on {on:,.0f} msg/s, on/off {on / rates['full']:.3f}"
            cpus["off"].append(cpu["full"] * 1e6)
            cpus["on"].append(cpu["on"] * 1e6)
            line += (
                f"; CPU/msg off {cpus['off'][-1]:.0f} us, on {cpus['on'][-1]:.0f} us, "
                f"off/on {cpus['off'][-1] / cpus['on'][-1]:.3f}"
            )
        print(line, flush=True)
    tracing_result: dict[str, object] = {}
    if traced is not None:
        tracing_result = {
            "tracing_on_mps": round(statistics.median(ons), 1),
            "tracing_ratio": round(
                statistics.median(o / f for o, f in zip(ons, fulls, strict=True)), 3
            ),
            "tracing_rounds": [round(o, 1) for o in ons],
            "tracing_cpu_us": {k: [round(c, 1) for c in v] for k, v in cpus.items()},
            "tracing_cpu_ratio": round(  # off/on: the rate ratio CPU alone would give
                statistics.median(f / o for f, o in zip(cpus["off"], cpus["on"], strict=True)),
                3,
            ),
        }
    return {
        **tracing_result,
        "consumer_mps": round(statistics.median(fulls), 1),
        "raw_mps": round(statistics.median(raws), 1),
        "ratio": round(statistics.median(f / r for f, r in zip(fulls, raws, strict=True)), 3),
        "rounds": [
            {"consumer_mps": round(f, 1), "raw_mps": round(r, 1)}
            for f, r in zip(fulls, raws, strict=True)
        ],
        "messages_per_round": n, "prefetch": prefetch, "db_pool_size": settings.database.pool_size,
        "batch_max": settings.worker.batch_max, "queue_type": "quorum",
        "aggregates": AGGREGATES,
        "event_loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
        "effect": effect_name, "partitions": partitions, "cpus": os.cpu_count(),
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
        help="row: a one-row INSERT per message, one statement per batch (default); "
        "row-each: one statement per message; none: the inbox row only",
    )
    parser.add_argument(
        "--partitions", type=int, default=os.cpu_count() or 1,
        help="runtime processes, one per partition (default: one per core)",
    )
    parser.add_argument(
        "--tracing", action="store_true",
        help="also measure the runtime with tracing on (OTLP to a local receiver): on/off ratio",
    )
    parser.add_argument(
        "--sampled", type=float, default=1.0,
        help="with --tracing: share of messages whose trace is sampled (default 1)",
    )
    parser.add_argument("--serve-partition", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_partition is not None:  # a partition process of partitioned_rate
        eventloop.run(
            serve_partition(args.serve_partition, args.partitions, args.prefetch, args.effect)
        )
        return
    n = args.messages or (5000 if args.quick else 20000)
    rounds = args.rounds or (3 if args.quick else 5)
    global TRACED, SAMPLED
    TRACED, SAMPLED = args.tracing, args.sampled
    with (
        isolated_settings(
            "bench", worker_metrics_port=0, db_pool_size=args.pool, log_level="WARNING",
            **({"worker_batch_max": args.batch_max} if args.batch_max else {}),
        ) as settings,
        otlp_sink() as sink,
    ):
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = sink.endpoint
        prefetch = args.prefetch or settings.worker.prefetch
        traced = settings.replace(tracing_enabled=True) if args.tracing else None
        result = eventloop.run(
            run(settings, n, rounds, prefetch, args.effect, args.partitions, traced)
        )
        if args.tracing:
            result["otlp_received"] = sink.received()
            result["sampled"] = args.sampled
    print(json.dumps(result))


if __name__ == "__main__":
    main()
