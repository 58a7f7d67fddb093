"""Helpers for relay tests: produce events in real transactions, collect what arrives."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import sys
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import aio_pika
import asyncpg

from outbox import add_event
from shared.config import Settings
from shared.db import asyncpg_dsn, create_engine, session_factory
from shared.events import UserRegistered
from shared.messaging import EVENTS_EXCHANGE, H_AGGREGATE_ID
from tests.support import ROOT, env_for


def event_for(aggregate: uuid.UUID, seq: int) -> UserRegistered:
    """An event whose display name carries its per-aggregate sequence number."""
    return UserRegistered(
        user_id=aggregate, email=f"{aggregate.hex[:8]}@example.org", display_name=str(seq)
    )


async def produce(
    settings: Settings,
    aggregates: Sequence[uuid.UUID],
    per_aggregate: int,
    *,
    concurrency: int = 20,
    max_delay_s: float = 0.0,
) -> set[str]:
    """Commit ``per_aggregate`` events for each aggregate, one transaction each, many at once,
    with a random pause before each commit so that transactions commit out of id order.
    Events of one aggregate are produced in sequence order. Returns the committed event ids."""
    engine = create_engine(settings.database.auth_url, pool_size=concurrency)
    sessions = session_factory(engine)
    committed: set[str] = set()
    queue: asyncio.Queue[uuid.UUID] = asyncio.Queue()
    for agg in aggregates:
        queue.put_nowait(agg)
    seqs: dict[uuid.UUID, int] = defaultdict(int)

    async def worker() -> None:
        while not queue.empty():
            agg = queue.get_nowait()
            seq = seqs[agg]
            async with sessions() as session, session.begin():
                event_id = await add_event(session, event_for(agg, seq))
                if max_delay_s:
                    await asyncio.sleep(random.uniform(0, max_delay_s))
            committed.add(str(event_id))
            seqs[agg] = seq + 1
            if seqs[agg] < per_aggregate:
                queue.put_nowait(agg)

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        await engine.dispose()
    return committed


@dataclass
class Collector:
    """Consumes a queue bound to ``events`` and remembers every delivery in order."""

    settings: Settings
    routing_keys: Sequence[str] = ("#",)
    deliveries: list[tuple[str, str, int]] = field(default_factory=list)
    """(message_id, aggregate id, sequence number) in arrival order."""

    async def __aenter__(self) -> Collector:
        self._conn = await aio_pika.connect(self.settings.broker.url)
        channel = await self._conn.channel()
        await channel.set_qos(prefetch_count=1000)
        exchange = await channel.declare_exchange(EVENTS_EXCHANGE, "topic", durable=True)
        self._queue = await channel.declare_queue(f"test-{uuid.uuid4().hex[:8]}", durable=True)
        for key in self.routing_keys:
            await self._queue.bind(exchange, key)
        self._tag = await self._queue.consume(self._on_message)
        return self

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        seq = json.loads(message.body).get("display_name")
        self.deliveries.append(
            (
                str(message.message_id),
                str((message.headers or {}).get(H_AGGREGATE_ID)),
                int(seq or -1),
            )
        )
        await message.ack()

    async def __aexit__(self, *exc: object) -> None:
        await self._queue.cancel(self._tag)
        await self._queue.delete(if_unused=False, if_empty=False)
        await self._conn.close()

    @property
    def ids(self) -> set[str]:
        return {message_id for message_id, _, _ in self.deliveries}

    async def wait_for(self, expected: set[str], timeout: float) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not expected <= self.ids:
            if asyncio.get_running_loop().time() > deadline:
                missing = len(expected - self.ids)
                raise AssertionError(f"{missing} of {len(expected)} events never arrived")
            await asyncio.sleep(0.05)

    def order_violations(self) -> list[str]:
        """Aggregates whose first deliveries did not arrive in sequence order."""
        seen: set[str] = set()
        last: dict[str, int] = {}
        bad = []
        for message_id, agg, seq in self.deliveries:
            if message_id in seen:
                continue  # a redelivered duplicate; consumers dedupe it by message id
            seen.add(message_id)
            if seq <= last.get(agg, -1):
                bad.append(f"{agg}: {seq} after {last[agg]}")
            last[agg] = max(seq, last.get(agg, -1))
        return bad


async def outbox_rows(settings: Settings, where: str = "true") -> list[asyncpg.Record]:
    conn = await asyncpg.connect(asyncpg_dsn(settings.database.auth_url))
    try:
        return list(await conn.fetch(f"SELECT * FROM outbox WHERE {where}"))
    finally:
        await conn.close()


async def clear_outbox(settings: Settings) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(settings.database.auth_url))
    try:
        await conn.execute("DELETE FROM outbox")
    finally:
        await conn.close()


def start_relay(settings: Settings, **overrides: object) -> subprocess.Popen[bytes]:
    """``python -m outbox --database authdb`` as a user starts it (metrics off unless
    ``relay_metrics_port`` is given)."""
    overrides.setdefault("relay_metrics_port", 0)
    env = env_for(settings.replace(**overrides), LOG_LEVEL="WARNING")
    return subprocess.Popen(
        [sys.executable, "-m", "outbox", "--database", "authdb"], cwd=ROOT, env=env
    )


async def wait_for_relays(settings: Settings, count: int, timeout: float = 15) -> None:
    """Wait until ``count`` relay processes have joined (hold their membership lock)."""
    from outbox.leases import LOCK_CLASS_MEMBER

    conn = await asyncpg.connect(asyncpg_dsn(settings.database.auth_url))
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while (
            await conn.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND classid = $1::oid AND database = (SELECT oid FROM pg_database "
                "WHERE datname = current_database())",
                LOCK_CLASS_MEMBER,
            )
            < count
        ):
            assert asyncio.get_running_loop().time() < deadline, f"{count} relay(s) never joined"
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


def stop_relay(process: subprocess.Popen[bytes], *, kill: bool = False) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
    return process.wait(timeout=30)
