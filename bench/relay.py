"""Relay benchmark: throughput and commit->delivery latency, each beside its floor.

    python bench/relay.py [--quick] [--events N] [--rounds R] [--rates 500,1000]
                          [--seconds S] [--sustain 2000,4000] [--profile DIR] [--tracing]
                          [--per-aggregate 5,100]

Everything runs against the local PostgreSQL and RabbitMQ in its own database and vhost
(removed afterwards), into one quorum queue bound to the events. Every kind of run is
repeated ``--rounds`` times, interleaved (the order rotates each round) so that a
neighbour's load on a shared machine hits all of them alike; medians, ranges and the
per-round ratios are reported.

1. Throughput, N events:
   ``aio_pika_eps``: a bare aio-pika publisher (persistent messages, publisher confirms,
   ``mandatory``, confirms pipelined in windows of 1,000).
   ``aiormq_eps``: the same with aiormq alone (``basic_publish(wait=False)``, one
   properties object per message, windows of 1,000): the floor below aio-pika.
   ``relay_eps``: N events committed to the outbox in one transaction; the relay
   (``python -m outbox``, a separate process as in production) publishes them; the time
   runs from the commit to the moment the outbox is empty, i.e. every row confirmed by
   the broker and deleted.
   ``relay_per_aggregate_K_eps`` (``--per-aggregate K,...``): the same with K consecutive
   events per aggregate (a saga writing several events of one user in one transaction;
   K = N: one hot aggregate). The relay keeps one event per aggregate unconfirmed at a
   time (order per aggregate, :mod:`outbox.relay`), so an aggregate's events cost one
   confirm round trip each.
2. Latency under load, for each ``--rates`` value: one event per transaction at that
   rate for ``--seconds``; from the moment each transaction is sent to the event's
   delivery to a consumer in another process (commit -> claim -> publish -> confirm ->
   delivery). The producer is open loop on ``PRODUCER_CONNECTIONS`` connections, each
   transaction the writer's own statement in autocommit (one round trip, COMMIT
   included); ``offered_eps`` is the rate it reached, ``lag_p*_ms`` how late sends were
   against the schedule. Floors in the same round: ``raw``, the same offered load
   published directly (bare aio-pika, confirmed), publish -> delivery; ``raw_commits``,
   the same while the producer commits at that rate to an outbox no relay reads (the
   floor under the same PostgreSQL load: on two shared cores the commits alone slow the
   broker and the consumer). ``relay_confirm_*``: the relay's own insert -> confirm
   histogram, interpolated. ``relay_commit_*``: the producer's transaction round trips
   (PostgreSQL's WAL flush, part of every commit -> delivery figure and absent from the
   raw floor). ``cpu``: % of one core per process group during each phase (from /proc;
   ``other (neighbours)`` is everyone else's load).
3. ``--sustain``: a steady offered load of outbox events (a transaction of rate/100
   events every 10 ms) held for 60 s at each rate, with the backlog sampled every second;
   a rate is held when it was offered (at least 95 %: the producer can fall behind), the
   backlog stays under one second's worth of events at the end and under two seconds'
   worth throughout (after the first 10 s). Reports the highest rate held, and the CPU
   per process group at each rate.

``--tracing`` adds two throughput runs to every round, on events that carry a
``traceparent`` each (as events of traced requests do): the relay with tracing off
(``relay_traced_off_eps``) and on (``relay_tracing_on_eps``: ``TRACING_ENABLED``, every
batch's publish span, linked to its events' origins, and the relay's SQL spans exported
over OTLP/HTTP to a local receiver, :mod:`bench.otlp_sink`), and their per-round ratio
``tracing_ratio`` (on / off).

``--profile DIR`` attaches py-spy to the relay during the first throughput round and the
first relay latency round of each rate (collapsed stacks, plus the top functions).

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import multiprocessing
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aio_pika
import aiormq
import asyncpg
import httpx
from pamqp.commands import Basic
from sqlalchemy import TextClause
from sqlalchemy.dialects.postgresql import asyncpg as pg_asyncpg
from sqlalchemy.ext.asyncio import AsyncConnection

from bench.otlp_sink import otlp_sink
from bench.procstat import CpuPhase
from outbox import add_event
from shared import eventloop
from shared.config import Settings
from shared.db import asyncpg_dsn
from shared.events import UserRegistered
from shared.messaging import EVENTS_EXCHANGE
from tests.relay_support import start_relay, stop_relay, wait_for_relays
from tests.support import free_port, isolated_settings

QUEUE = "bench.relay"
BODY = json.dumps({"user_id": str(uuid.uuid4()), "email": "bench@example.org", "display_name": "b"})
WINDOW = 1000
PRODUCER_CONNECTIONS = 16
"""The latency producer's connections: enough for 1,000 transactions/s at a 16 ms commit
(one round trip each); more would take a large share of PostgreSQL's 100 connections from
whoever else shares the server."""


async def declare(channel: aio_pika.abc.AbstractChannel) -> aio_pika.abc.AbstractQueue:
    exchange = await channel.declare_exchange(EVENTS_EXCHANGE, "topic", durable=True)
    queue = await channel.declare_queue(QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
    await queue.bind(exchange, "user.#")
    return queue


def _headers(i: int) -> dict[str, Any]:
    return {"x-aggregate-type": "user", "x-aggregate-id": str(i)}


async def aio_pika_publisher(settings: Settings, n: int) -> float:
    connection = await aio_pika.connect(settings.broker.url)
    channel = await connection.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(EVENTS_EXCHANGE)
    started = time.perf_counter()
    for offset in range(0, n, WINDOW):
        await asyncio.gather(
            *(
                exchange.publish(
                    aio_pika.Message(
                        BODY.encode(),
                        message_id=str(uuid.uuid4()),
                        type="user.registered",
                        content_type="application/json",
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        headers=_headers(i),
                    ),
                    routing_key="user.registered",
                    mandatory=True,
                )
                for i in range(offset, min(n, offset + WINDOW))
            )
        )
    elapsed = time.perf_counter() - started
    await connection.close()
    return n / elapsed


async def aiormq_publisher(settings: Settings, n: int) -> float:
    """The floor below aio-pika: aiormq's own publish, confirms pipelined the same way."""
    connection = await aiormq.connect(settings.broker.url)
    channel = await connection.channel(publisher_confirms=True)
    body = BODY.encode()
    started = time.perf_counter()
    for offset in range(0, n, WINDOW):
        await asyncio.gather(
            *(
                channel.basic_publish(  # type: ignore[call-arg]
                    body,
                    exchange=EVENTS_EXCHANGE,
                    routing_key="user.registered",
                    mandatory=True,
                    wait=False,
                    properties=Basic.Properties(
                        message_id=str(uuid.uuid4()),
                        message_type="user.registered",
                        content_type="application/json",
                        delivery_mode=2,
                        headers=_headers(i),
                    ),
                )
                for i in range(offset, min(n, offset + WINDOW))
            )
        )
    elapsed = time.perf_counter() - started
    await connection.close()
    return n / elapsed


class Profiler:
    """py-spy attached to a process for one phase (collapsed stacks), when asked for;
    ``threads``: each stack starts with its thread, so a thread's share can be read."""

    def __init__(self, directory: Path | None, name: str, pid: int, *, threads: bool = False):
        self._path = directory / f"{name}.txt" if directory else None
        self._pid = pid
        self._threads = threads
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Profiler:
        if self._path is not None:
            py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
            if not Path(py_spy).exists():
                raise SystemExit("--profile needs py-spy: pip install py-spy")
            self._process = subprocess.Popen(
                [py_spy, "record", "--pid",
                 str(self._pid), "--format", "raw", "--rate", "200", "--nonblocking",
                 "--output", str(self._path), *(["--threads"] if self._threads else [])],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            time.sleep(0.5)  # attached before the phase starts
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process is None or self._path is None:
            return
        self._process.send_signal(signal.SIGINT)
        self._process.wait(30)
        print(f"profile {self._path.name}: " + json.dumps(top_functions(self._path)), flush=True)


def top_functions(path: Path, k: int = 12) -> dict[str, float]:
    """Share of samples (%) in which each function is on the stack (inclusive), top k."""
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        samples = int(count)
        total += samples
        for frame in {f.split(" (")[0] for f in stack.split(";")}:
            inclusive[frame] += samples
    return {f: round(100 * c / total, 1) for f, c in inclusive.most_common(k)} if total else {}


async def relay_throughput(
    settings: Settings, n: int, profile: Path | None, *, traced: bool = False,
    per_aggregate: int = 1,
) -> float:
    conn = await asyncpg.connect(asyncpg_dsn(settings.database.auth_url))
    relay = start_relay(settings)
    try:
        await wait_for_relays(settings, 1)
        await asyncio.sleep(1.0)  # the relay owns its partitions and sits idle
        with Profiler(profile, "relay-throughput", relay.pid):
            rate = await _commit_and_drain(conn, n, traced=traced, per_aggregate=per_aggregate)
        await _expect_queued(settings, n)
        return rate
    finally:
        stop_relay(relay)
        await conn.close()


async def _commit_and_drain(
    conn: asyncpg.Connection, n: int, *, traced: bool = False, per_aggregate: int = 1
) -> float:
    """Commit n events in one transaction; events/s from the commit to an empty outbox."""
    async with conn.transaction():
        await insert_events(conn, n, traced=traced, per_aggregate=per_aggregate)
    started = time.perf_counter()
    while await conn.fetchval("SELECT EXISTS (SELECT 1 FROM outbox)"):
        await asyncio.sleep(0.005)
    return n / (time.perf_counter() - started)


async def _expect_queued(settings: Settings, n: int) -> None:
    """Every event the relay reported as sent is in the queue (none lost, none twice)."""
    connection = await aio_pika.connect(settings.broker.url)
    try:
        channel = await connection.channel()
        for _ in range(100):
            queued = (await channel.declare_queue(QUEUE, passive=True)).declaration_result
            if queued.message_count == n:
                return
            await asyncio.sleep(0.1)
        raise SystemExit(f"the queue holds {queued.message_count} messages, expected {n}")
    finally:
        await connection.close()


async def insert_events(
    conn: asyncpg.Connection, n: int, *, traced: bool = False, per_aggregate: int = 1
) -> None:
    """n outbox rows in one statement (the writer's columns), ``per_aggregate`` consecutive
    rows per aggregate (1: all different); ``traced``: each with a traceparent of its own
    (one trace per request)."""
    await conn.execute(
        """
        INSERT INTO outbox (event_id, event_type, routing_key, aggregate_type,
            aggregate_id, partition, schema_version, payload, traceparent)
        SELECT gen_random_uuid(), 'user.registered', 'user.registered', 'user',
               a::text, a % 16, 1, $1::jsonb,
               CASE WHEN $3 THEN '00-' || md5(g::text || $4) || '-'
                                 || left(md5($4 || g::text), 16) || '-01' END
        FROM generate_series(1, $2) AS g, LATERAL (SELECT (g - 1) / $5 AS a) AS agg
        """,
        BODY,
        n,
        traced,
        uuid.uuid4().hex,
        per_aggregate,
    )


def _consume(url: str, expected: int, pipe: Connection) -> None:
    """Consumer process: record when each message arrives (monotonic clock, shared).
    Gives up 30 s after the producer said it has produced everything."""

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
        pipe.send("ready")
        await asyncio.to_thread(pipe.recv)  # everything is produced
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 30)
        await connection.close()
        return arrived

    pipe.send(eventloop.run(consume()))


async def _offered_load(
    settings: Settings,
    rate: int,
    seconds: float,
    one: Callable[[], Coroutine[Any, Any, tuple[str, float]]],
    roles: dict[str, int],
    stats: dict[str, Any],
) -> list[float]:
    """Call ``one`` ``rate`` times a second; each returns (message id, its start time).
    A consumer in another process records arrivals; returns start -> delivery in ms.
    ``stats`` receives the CPU of each process group over the offered load (``cpu``), the
    rate actually offered (``offered_eps``: sends over the span from the first to the last)
    and how late the sends were against the schedule (``lag_p50_ms``, ``lag_p99_ms``: time
    waiting for a free connection, or a producer loop short of CPU)."""
    total = int(rate * seconds)
    receiver, sender = multiprocessing.get_context("spawn").Pipe()
    consumer = multiprocessing.get_context("spawn").Process(
        target=_consume, args=(settings.broker.url, total, sender)
    )
    consumer.start()
    try:
        await asyncio.to_thread(receiver.recv)  # the consumer is subscribed
        assert consumer.pid is not None
        tasks: list[asyncio.Task[tuple[str, float]]] = []
        phase = CpuPhase({**roles, "producer (bench)": os.getpid(), "consumer": consumer.pid},
                         _db_tag(settings))
        with phase:
            start = time.perf_counter()
            for i in range(total):
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one()))
            started = await asyncio.gather(*tasks)
        sent = dict(started)
        stats["cpu"] = phase.percent
        times = [t for _, t in started]
        stats["offered_eps"] = round(len(times) / max(max(times) - min(times), 1e-9))
        lags = [(t - (start + i / rate)) * 1000 for i, t in enumerate(times)]
        stats["lag_p50_ms"] = round(percentile(lags, 50), 2)
        stats["lag_p99_ms"] = round(percentile(lags, 99), 2)
        receiver.send("produced")
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


class OneStatementTransaction:
    """What :func:`outbox.add_event` executes, on a plain asyncpg connection in autocommit:
    the writer's own statement (advisory lock and insert, the same parameters) as a
    single-event transaction in one round trip, COMMIT (and its WAL flush) included.

    The producer shares two cores with PostgreSQL, RabbitMQ, the relay and the consumer: an
    ORM or Core transaction (BEGIN, INSERT, COMMIT: three round trips and SQLAlchemy's work
    in between) held a connection so long that 16 of them offered about 550 of 1,000
    transactions/s, and its CPU was taken from the relay it measures."""

    _compiled: tuple[str, tuple[str, ...]] | None = None

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def execute(self, statement: TextClause, params: dict[str, Any]) -> None:
        if OneStatementTransaction._compiled is None:
            compiled = statement.compile(dialect=pg_asyncpg.dialect())  # type: ignore[no-untyped-call]
            OneStatementTransaction._compiled = (str(compiled), tuple(compiled.positiontup or ()))
        sql, names = OneStatementTransaction._compiled
        await self._conn.execute(sql, *(params[name] for name in names))


class Producer:
    """Single-event transactions on ``PRODUCER_CONNECTIONS`` connections, open loop: a
    transaction is due at its time whether or not earlier ones have committed; it waits
    for a free connection (reported as send lag) instead of lowering the rate offered."""

    def __init__(self, connections: list[asyncpg.Connection]) -> None:
        self._connections = connections
        self._free: asyncio.Queue[asyncpg.Connection] = asyncio.Queue()
        for conn in connections:
            self._free.put_nowait(conn)
        self.commits: list[float] = []
        """The COMMIT round trips (ms): PostgreSQL's own share of the latency."""

    @classmethod
    async def open(cls, settings: Settings) -> Producer:
        dsn = asyncpg_dsn(settings.database.auth_url)
        return cls(
            list(await asyncio.gather(*(asyncpg.connect(dsn) for _ in range(PRODUCER_CONNECTIONS))))
        )

    async def close(self) -> None:
        await asyncio.gather(*(conn.close() for conn in self._connections))

    async def one(self) -> tuple[str, float]:
        """Commit one event; (its id, when the transaction was sent)."""
        conn = await self._free.get()
        try:
            # Timed as the transaction is sent: its row is invisible to the relay before
            # it commits, and a busy producer loop cannot make the figure look better.
            committing = time.perf_counter()
            event_id = await add_event(
                cast(AsyncConnection, OneStatementTransaction(conn)),
                UserRegistered(user_id=uuid.uuid4(), email="l@example.org"),
            )
            self.commits.append((time.perf_counter() - committing) * 1000)
        finally:
            self._free.put_nowait(conn)
        return str(event_id), committing

    async def offer(self, rate: int, stop: asyncio.Event) -> None:
        """The latency phases' schedule until ``stop`` is set: load beside another phase."""
        tasks: list[asyncio.Task[tuple[str, float]]] = []
        start, i = time.perf_counter(), 0
        while not stop.is_set():
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self.one()))
            i += 1
        await asyncio.gather(*tasks)
        await self._connections[0].execute("DELETE FROM outbox")


async def relay_latency(
    settings: Settings, rate: int, seconds: float, out: dict[str, Any], profile: Path | None
) -> list[float]:
    """Single-event transactions through the outbox and the relay: commit -> delivery.
    ``out`` receives the relay's own insert -> confirm p50/p99 (its histogram) and the CPU."""
    producer = await Producer.open(settings)
    port = free_port()
    relay = start_relay(settings, relay_metrics_port=port)
    try:
        await wait_for_relays(settings, 1)
        await asyncio.sleep(1.0)
        with Profiler(profile, f"relay-latency-{rate}", relay.pid):
            latencies = await _offered_load(
                settings, rate, seconds, producer.one, {"relay": relay.pid}, out
            )
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
        out["commit_p50_ms"] = round(percentile(producer.commits, 50), 2)
        out["commit_p99_ms"] = round(percentile(producer.commits, 99), 2)
        for q in (0.5, 0.99):
            name = "ams_outbox_commit_to_confirm_seconds"
            out[f"confirm_p{int(q * 100)}_ms"] = round(histogram_quantile(text, name, q), 2)
        return latencies
    finally:
        stop_relay(relay)
        await producer.close()


async def raw_latency(
    settings: Settings, rate: int, seconds: float, out: dict[str, Any],
    roles: dict[str, int] | None = None,
) -> list[float]:
    """The floor: a bare aio-pika publish (confirmed) at the same rate: publish -> delivery."""
    connection = await aio_pika.connect(settings.broker.url)
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
        return await _offered_load(settings, rate, seconds, one, roles or {}, out)
    finally:
        await connection.close()


def _commit_load(settings: Settings, rate: int, pipe: Connection) -> None:
    """Commit-load process: the latency producer at ``rate`` until told to stop."""

    async def load() -> None:
        producer = await Producer.open(settings)
        stop = asyncio.Event()
        task = asyncio.create_task(producer.offer(rate, stop))
        pipe.send("started")
        await asyncio.to_thread(pipe.recv)
        stop.set()
        await task
        await producer.close()

    eventloop.run(load())
    pipe.send("stopped")


async def raw_beside_commits(
    settings: Settings, rate: int, seconds: float, out: dict[str, Any]
) -> list[float]:
    """The floor under the same PostgreSQL load: the bare publisher at ``rate`` while
    another process commits the same single-event transactions at that rate to an outbox
    no relay reads (as the relay runs beside the bench's producer). On a machine short of
    cores the commits' CPU and wake-ups (a backend and a WAL flush per transaction) slow
    the broker and the consumer too; the gap between this floor and the relay is what the
    relay itself costs. The load runs from before the publisher starts until after it
    ends; its rows are deleted then."""
    receiver, sender = multiprocessing.get_context("spawn").Pipe()
    loader = multiprocessing.get_context("spawn").Process(
        target=_commit_load, args=(settings, rate, sender)
    )
    loader.start()
    try:
        await asyncio.to_thread(receiver.recv)
        assert loader.pid is not None
        return await raw_latency(settings, rate, seconds, out, {"commit load": loader.pid})
    finally:
        receiver.send("stop")
        await asyncio.to_thread(receiver.recv)
        loader.join(30)


async def sustain(settings: Settings, rate: int, seconds: float = 60.0) -> dict[str, Any]:
    """Offer ``rate`` events/s (a transaction of rate/100 events every 10 ms) for
    ``seconds``; sample the backlog every second."""
    conn = await asyncpg.connect(asyncpg_dsn(settings.database.auth_url))
    probe = await asyncpg.connect(asyncpg_dsn(settings.database.auth_url))
    relay = start_relay(settings)
    per_tick = max(1, rate // 100)
    backlog: list[int] = []
    try:
        await wait_for_relays(settings, 1)
        await asyncio.sleep(1.0)

        async def sample() -> None:
            while True:
                await asyncio.sleep(1.0)
                backlog.append(await probe.fetchval("SELECT count(*) FROM outbox"))

        sampler = asyncio.create_task(sample())
        start, ticks = time.perf_counter(), int(seconds * 100)
        roles = {"relay": relay.pid, "producer (bench)": os.getpid()}
        with CpuPhase(roles, _db_tag(settings)) as cpu:
            for tick in range(ticks):
                delay = start + tick / 100 - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                await insert_events(conn, per_tick)
        offered = per_tick * ticks / (time.perf_counter() - start)
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        steady = backlog[10:] or backlog
        # Held only if it was offered: a producer that fell behind offered a lower rate.
        held = (
            bool(backlog) and backlog[-1] <= rate and max(steady) <= 2 * rate
            and offered >= 0.95 * rate
        )
        await conn.execute("DELETE FROM outbox")
        return {
            "rate": rate,
            "offered_eps": round(offered),
            "held": held,
            "max_backlog": max(backlog, default=0),
            "final_backlog": backlog[-1] if backlog else None,
            "cpu": cpu.percent,
        }
    finally:
        stop_relay(relay)
        await conn.close()
        await probe.close()


def _db_tag(settings: Settings) -> str:
    """What the benchmark's databases' names share (their PostgreSQL backends' role)."""
    return settings.database.auth_url.rsplit("/", 1)[1].rsplit("_", 1)[0]


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 10) - 1]


def spread(values: list[float], digits: int = 2) -> dict[str, Any]:
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "rounds": [round(v, digits) for v in values],
    }


async def throughput_rounds(
    settings: Settings, queue: aio_pika.abc.AbstractQueue, events: int, rounds: int,
    profile: Path | None, tracing: bool = False, per_aggregate: Sequence[int] = (),
) -> dict[str, Any]:
    kinds: dict[str, Callable[[int], Awaitable[float]]] = {
        "aio_pika_eps": lambda r: aio_pika_publisher(settings, events),
        "aiormq_eps": lambda r: aiormq_publisher(settings, events),
        "relay_eps": lambda r: relay_throughput(settings, events, profile if r == 0 else None),
    }
    if tracing:
        on = settings.replace(tracing_enabled=True)
        kinds["relay_traced_off_eps"] = lambda r: relay_throughput(
            settings, events, None, traced=True
        )
        kinds["relay_tracing_on_eps"] = lambda r: relay_throughput(on, events, None, traced=True)
    for k in per_aggregate:
        kinds[f"relay_per_aggregate_{k}_eps"] = functools.partial(
            lambda k, r: relay_throughput(settings, events, None, per_aggregate=k), k
        )
    results: dict[str, list[float]] = {k: [] for k in kinds}
    names = list(kinds)
    for r in range(rounds):
        turn = r % len(names)
        for name in names[turn:] + names[:turn]:
            results[name].append(await kinds[name](r))
            await queue.purge()
        print(f"round {r + 1}: " + json.dumps({k: round(v[-1]) for k, v in results.items()}),
              flush=True)
    relay, aio, rmq = results["relay_eps"], results["aio_pika_eps"], results["aiormq_eps"]
    traced: dict[str, Any] = {}
    if tracing:
        off, on_eps = results["relay_traced_off_eps"], results["relay_tracing_on_eps"]
        traced["tracing_ratio"] = spread([a / b for a, b in zip(on_eps, off, strict=True)], 3)
    return {
        **traced,
        **{k: spread(v, 0) for k, v in results.items()},
        "ratio_to_aio_pika": spread([a / b for a, b in zip(relay, aio, strict=True)], 3),
        "ratio_to_aiormq": spread([a / b for a, b in zip(relay, rmq, strict=True)], 3),
    }


KINDS = ("raw", "raw_commits", "relay")
"""The latency phases of a round: the bare publisher, the same beside the producer's
commits (no relay), and the relay."""


async def latency_rounds(
    settings: Settings, queue: aio_pika.abc.AbstractQueue, rate: int, seconds: float,
    rounds: int, profile: Path | None,
) -> dict[str, Any]:
    """Every kind once a round, the order rotating; p50/p99 per kind and the relay's
    per-round targets (p50 - raw p50, p99 / raw p99)."""
    figures: dict[str, dict[str, list[float]]] = {kind: {} for kind in KINDS}
    cpu: dict[str, dict[str, float]] = {}
    for r in range(rounds):
        for kind in KINDS[r % 3 :] + KINDS[: r % 3]:
            out: dict[str, Any] = {}
            if kind == "raw":
                lat = await raw_latency(settings, rate, seconds, out)
            elif kind == "raw_commits":
                lat = await raw_beside_commits(settings, rate, seconds, out)
            else:
                lat = await relay_latency(settings, rate, seconds, out, profile if r == 0 else None)
            out.update(p50=percentile(lat, 50), p99=percentile(lat, 99))
            cpu[f"{kind} round {r + 1}"] = out.pop("cpu")
            for key, value in out.items():
                figures[kind].setdefault(key, []).append(value)
            await queue.purge()
        last = {kind: {k: round(v[-1], 2) for k, v in f.items()} for kind, f in figures.items()}
        print(f"rate {rate} round {r + 1}: " + json.dumps(last), flush=True)
        print("cpu: " + json.dumps({k: v for k, v in cpu.items() if k.endswith(f"round {r + 1}")}),
              flush=True)
    raw, relay, loaded = figures["raw"], figures["relay"], figures["raw_commits"]
    return {
        **{f"{kind}_{key}": spread(values) for kind, f in figures.items()
           for key, values in f.items()},
        "p50_minus_raw_ms": spread([a - b for a, b in zip(relay["p50"], raw["p50"], strict=True)]),
        "p99_over_raw": spread([a / b for a, b in zip(relay["p99"], raw["p99"], strict=True)], 3),
        "p50_minus_raw_commits_ms": spread(
            [a - b for a, b in zip(relay["p50"], loaded["p50"], strict=True)]
        ),
        "p99_over_raw_commits": spread(
            [a / b for a, b in zip(relay["p99"], loaded["p99"], strict=True)], 3
        ),
        "cpu_percent_of_one_core": cpu,
    }


async def run(
    settings: Settings, events: int, rounds: int, rates: list[int], seconds: float,
    sustain_rates: list[int], profile: Path | None, tracing: bool = False,
    per_aggregate: Sequence[int] = (),
) -> dict[str, Any]:
    connection = await aio_pika.connect(settings.broker.url)
    channel = await connection.channel()
    queue = await declare(channel)
    result: dict[str, Any] = {"events": events, "rounds": rounds, "queue_type": "quorum"}
    if events:
        result["throughput"] = await throughput_rounds(
            settings, queue, events, rounds, profile, tracing, per_aggregate
        )
    result["latency"] = {}
    for rate in rates:
        result["latency"][str(rate)] = await latency_rounds(
            settings, queue, rate, seconds, rounds, profile
        )
    if sustain_rates:
        held: list[dict[str, Any]] = []
        for rate in sustain_rates:
            outcome = await sustain(settings, rate)
            await queue.purge()
            print("sustain: " + json.dumps(outcome), flush=True)
            held.append(outcome)
            if not outcome["held"]:
                break
        result["sustain"] = {
            "highest_held_eps": max((o["rate"] for o in held if o["held"]), default=None),
            "tried": held,
        }
    await queue.delete(if_unused=False, if_empty=False)
    await connection.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small run, a few minutes")
    parser.add_argument("--events", type=int, help="events per throughput run (0: skip)")
    parser.add_argument("--rounds", type=int, help="interleaved repetitions of every run")
    parser.add_argument("--rates", default="500,1000", help="offered loads, events/s")
    parser.add_argument("--seconds", type=float, help="duration of each latency run")
    parser.add_argument("--sustain", default="", help="rates to hold for 60 s each, ascending")
    parser.add_argument("--profile", type=Path, help="directory for py-spy profiles")
    parser.add_argument(
        "--tracing", action="store_true",
        help="also the relay with tracing off and on, on traced events (OTLP to a local sink)",
    )
    parser.add_argument(
        "--per-aggregate", default="",
        help="also throughput runs with K consecutive events per aggregate, for each K",
    )
    args = parser.parse_args()
    events = args.events if args.events is not None else (10_000 if args.quick else 50_000)
    seconds = args.seconds or (5.0 if args.quick else 20.0)
    rounds = args.rounds or 3
    rates = [int(r) for r in args.rates.split(",") if r]
    sustain_rates = [int(r) for r in args.sustain.split(",") if r]
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    with isolated_settings("bench") as settings, otlp_sink() as sink:
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = sink.endpoint
        result = eventloop.run(
            run(
                settings, events, rounds, rates, seconds, sustain_rates, args.profile,
                args.tracing, [int(k) for k in args.per_aggregate.split(",") if k],
            )
        )
        if args.tracing:
            result["otlp_received"] = sink.received()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
