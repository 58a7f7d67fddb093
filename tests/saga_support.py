"""The deletion saga's moving parts, in-process, for the saga tests.

:class:`SagaStack` runs the outbox relay (all three databases) and any of the consumers
``profiles``, ``documents``, ``saga`` (with its timeout sweeper) in the test's event
loop, each startable and stoppable on its own; ``saga_worker_process`` runs the saga
worker as a real process instead, for kill -9 tests.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from typing import Any

import aio_pika
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from outbox.__main__ import build_relays
from shared.config import DATABASES, Settings
from shared.db import create_engine
from shared.messaging import EVENTS_EXCHANGE
from tests.support import ROOT, env_for, wait_for
from workers import registry
from workers.runtime.consumer import BackgroundTask
from workers.runtime.running import RunningConsumer


class SagaStack:
    def __init__(self, settings: Settings, *, relay: bool = True) -> None:
        self.settings = settings
        self.relay = relay
        self.engines: dict[str, AsyncEngine] = {
            db: create_engine(settings.database.url(db), pool_size=2) for db in DATABASES
        }
        self._stop = asyncio.Event()
        self._relay: asyncio.Future[Any] | None = None
        self._consumers: dict[str, RunningConsumer] = {}
        self._background: dict[str, tuple[asyncio.Event, list[asyncio.Task[None]]]] = {}

    async def __aenter__(self) -> SagaStack:
        if self.relay:
            relays = build_relays(self.settings, DATABASES)
            self._relay = asyncio.gather(*(r.run(self._stop) for r in relays))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for name in list(self._consumers):
            await self.stop(name)
        self._stop.set()
        if self._relay is not None:
            await asyncio.wait_for(self._relay, 15)
        for engine in self.engines.values():
            await engine.dispose()

    async def start(self, name: str) -> None:
        consumer = registry.get(name)(self.settings)
        self._consumers[name] = await consumer.start(self.settings)
        stop = asyncio.Event()  # the consumer's background tasks (the saga sweeper)
        tasks = [asyncio.create_task(_run(task, stop)) for task in consumer.background]
        self._background[name] = (stop, tasks)

    async def stop(self, name: str) -> None:
        running = self._consumers.pop(name)
        stop, tasks = self._background.pop(name)
        stop.set()
        await asyncio.gather(*tasks)
        await running.stop(grace_s=5)
        if running.consumer.engine is not None:
            await running.consumer.engine.dispose()

    # --- looking at the databases ---------------------------------------------------------
    async def one(self, db: str, sql: str, **params: Any) -> Any:
        async with self.engines[db].connect() as conn:
            return (await conn.execute(sa.text(sql), params)).first()

    async def scalar(self, db: str, sql: str, **params: Any) -> Any:
        async with self.engines[db].connect() as conn:
            return (await conn.execute(sa.text(sql), params)).scalar()

    async def wait_for(
        self, db: str, sql: str, predicate: Any, *, timeout_s: float = 20.0, **params: Any
    ) -> Any:
        """Poll ``sql`` until ``predicate(first row)`` holds; the row."""
        deadline = time.monotonic() + timeout_s
        row = None
        while time.monotonic() < deadline:
            row = await self.one(db, sql, **params)
            if predicate(row):
                return row
            await asyncio.sleep(0.1)
        raise AssertionError(f"timed out after {timeout_s}s waiting on {sql!r}; last row {row}")

    async def wait_status(
        self, saga_id: uuid.UUID | str, *statuses: str, timeout_s: float = 20.0
    ) -> Any:
        return await self.wait_for(
            "authdb",
            "SELECT * FROM sagas WHERE id = :id",
            lambda r: r is not None and r.status in statuses,
            timeout_s=timeout_s,
            id=saga_id,
        )

    async def wait_step(self, saga_id: uuid.UUID | str, step: str) -> Any:
        """Wait until the saga's current step is ``step`` (its request was sent)."""
        return await self.wait_for(
            "authdb",
            "SELECT * FROM sagas WHERE id = :id",
            lambda r: r is not None and r.current_step == step,
            id=saga_id,
        )

    async def steps(self, saga_id: uuid.UUID | str) -> dict[str, Any]:
        async with self.engines["authdb"].connect() as conn:
            rows = (
                await conn.execute(
                    sa.text("SELECT * FROM saga_steps WHERE saga_id = :id ORDER BY seq"),
                    {"id": saga_id},
                )
            ).all()
        return {r.name: r for r in rows}


async def _run(task: BackgroundTask, stop: asyncio.Event) -> None:
    await task(stop)


def worker_process(settings: Settings, name: str = "saga") -> subprocess.Popen[bytes]:
    """``python -m workers <name>`` with ``settings``."""
    env = env_for(settings, WORKER_METRICS_PORT="0", LOG_LEVEL="WARNING")
    return subprocess.Popen([sys.executable, "-m", "workers", name], cwd=ROOT, env=env)


async def tap(settings: Settings, routing_key: str) -> str:
    """A queue of the test's own that receives every ``routing_key`` event; its name."""
    name = f"test.tap.{routing_key}.{uuid.uuid4().hex[:6]}"
    connection = await aio_pika.connect(settings.broker.url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, durable=False)
        await queue.bind(EVENTS_EXCHANGE, routing_key)
    finally:
        await connection.close()
    return name


async def queue_depth(settings: Settings, queue: str) -> int:
    """Messages ready in ``queue`` (a passive declare: exact)."""
    connection = await aio_pika.connect(settings.broker.url)
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)
    finally:
        await connection.close()


async def consumer_count(settings: Settings, queue: str) -> int:
    """Consumers on ``queue``; 0 while the queue does not exist yet."""
    connection = await aio_pika.connect(settings.broker.url)
    try:
        channel = await connection.channel()
        try:
            declared = await channel.declare_queue(queue, passive=True)
        except aio_pika.exceptions.ChannelClosed:
            return 0
        return int(declared.declaration_result.consumer_count or 0)
    finally:
        await connection.close()


async def wait_consuming(settings: Settings, queue: str, timeout: float = 60) -> None:
    """Until a worker process consumes ``queue`` (its start-up takes seconds under load)."""

    async def consuming() -> bool:
        return await consumer_count(settings, queue) > 0

    await wait_for(consuming, timeout, f"a consumer on {queue}")
