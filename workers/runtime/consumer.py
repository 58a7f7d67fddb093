"""The consumer runtime every worker uses: a consumer's definition, and its run loop.

A :class:`Consumer` is a name (its work queue), a database and one table of handlers
(event class -> handler). The runtime takes messages from the durable queue with a
robust connection, runs each handler with the inbox row in the same transaction as its
effect, acks only after the commit, and maps failures once (:mod:`workers.runtime.failures`):
retry after a delay through ``<consumer>.retry.<delay>``, or park in ``<consumer>.dlq``
with the reason attached (:mod:`workers.runtime.processor`). A started consumer is a
:class:`~workers.runtime.running.RunningConsumer`.

Parallelism: up to ``prefetch`` messages are in flight; messages with the same
``x-aggregate-id`` run one after another in arrival order, others in parallel (under
load, several aggregates in one transaction: :mod:`workers.runtime.batching`). A message
sent to a retry queue no longer holds up later messages of its aggregate: a poison
message must not block what comes behind it. Beyond one core, a consumer is split into
partitions (``WORKER_PARTITIONS``): each process consumes one partition queue, and every
aggregate belongs to exactly one partition (:mod:`workers.runtime.partitions`).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence

import aio_pika
from prometheus_client import start_http_server
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.config import Settings
from shared.errors import AmsError
from shared.events import Message
from shared.logging import get_logger
from shared.topology import ConsumerSpec
from workers.runtime.running import RunningConsumer
from workers.runtime.sessions import Handler

log = get_logger(__name__)

CONNECT_RETRY_MAX_S = 30.0


Hook = Callable[[], Awaitable[None]]
"""A start or stop hook: ``async def hook() -> None``."""

BackgroundTask = Callable[[asyncio.Event], Awaitable[None]]
"""A task that runs beside the consumer until the event is set (the saga sweeper)."""


class MisconfiguredConsumer(AmsError):
    """A consumer's handler table does not match its spec in :mod:`shared.topology`."""


class Consumer:
    """One consumer: its ``spec`` (queue name, database, routing keys, partitionable: from
    :data:`shared.topology.CONSUMERS` for the product's workers) and its one table of
    ``handlers``, which must handle exactly the spec's routing keys.

    ``prefetch``, ``max_attempts``, ``retry_delays`` (e.g. ``"1s,5s,30s"``),
    ``batch_max`` (messages per transaction under load; 1 for slow handlers such as OCR,
    so that one long job holds no one else's commit) and ``partitions`` default to the
    ``WORKER_*`` settings. ``engine`` is the database engine of the handlers and of the
    background tasks (:func:`~workers.runtime.sessions.runtime_engine`; made at start when
    not given). ``run`` calls
    ``on_start`` before consuming, runs each ``background`` task beside it, and calls
    ``on_stop`` at the end.
    """

    def __init__(
        self,
        spec: ConsumerSpec,
        handlers: Mapping[type[Message], Handler],
        *,
        prefetch: int | None = None,
        max_attempts: int | None = None,
        retry_delays: str | None = None,
        batch_max: int | None = None,
        partitions: int | None = None,
        engine: AsyncEngine | None = None,
        on_start: Sequence[Hook] = (),
        on_stop: Sequence[Hook] = (),
        background: Sequence[BackgroundTask] = (),
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.database = spec.database
        self.handlers: dict[str, tuple[type[Message], Handler]] = {
            cls.event_type: (cls, handler) for cls, handler in handlers.items()
        }
        _check_handlers(spec, set(self.handlers))
        self.prefetch = prefetch
        self.max_attempts = max_attempts
        self.retry_delays = retry_delays
        self.batch_max = batch_max
        self.partitions = partitions
        self.engine = engine
        self.on_start = tuple(on_start)
        self.on_stop = tuple(on_stop)
        self.background = tuple(background)

    def spec_for(self, settings: Settings) -> ConsumerSpec:
        """The consumer's queues: one work queue, or one per partition."""
        return self.spec.with_partitions(self.partitions or settings.worker.partitions)

    async def start(self, settings: Settings, partition: int = 0) -> RunningConsumer:
        """Declare the consumer's queues, connect and start consuming ``partition``."""
        running = RunningConsumer(self, settings, partition)
        await running.start()
        return running

    async def run(self, settings: Settings, partition: int = 0) -> None:
        """Consume until SIGTERM/SIGINT; then stop taking messages, finish in-flight ones."""
        if settings.worker.metrics_port:
            start_http_server(settings.worker.metrics_port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        tasks: list[asyncio.Task[None]] = []
        try:
            for hook in self.on_start:
                await hook()
            tasks = [asyncio.create_task(_background(task, stop)) for task in self.background]
            await self._consume(settings, partition, stop)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
            for hook in self.on_stop:
                await hook()
            if self.engine is not None:
                await self.engine.dispose()

    async def _consume(self, settings: Settings, partition: int, stop: asyncio.Event) -> None:
        running = await _start_when_reachable(self, settings, partition, stop)
        if running is None:
            return
        log.info("consumer_started", consumer=self.name, queue=running.spec.queue_name)
        await stop.wait()
        log.info("consumer_stopping", consumer=self.name, in_flight=running.in_flight)
        await running.stop()


async def _background(task: BackgroundTask, stop: asyncio.Event) -> None:
    await task(stop)


def _check_handlers(spec: ConsumerSpec, handled: set[str]) -> None:
    expected = set(spec.routing_keys)
    if handled == expected:
        return
    missing = ", ".join(sorted(expected - handled)) or "none"
    extra = ", ".join(sorted(handled - expected)) or "none"
    raise MisconfiguredConsumer(
        f"consumer {spec.name!r}: its handlers do not match its routing keys in "
        f"shared/topology.py (no handler for: {missing}; handled but not routed: {extra})"
    )


async def _start_when_reachable(
    consumer: Consumer, settings: Settings, partition: int, stop: asyncio.Event
) -> RunningConsumer | None:
    """Start, retrying with backoff while the broker or database is unreachable."""
    delay = 0.5
    while not stop.is_set():
        try:
            return await consumer.start(settings, partition)
        except (OSError, ConnectionError, aio_pika.exceptions.AMQPError) as exc:
            log.warning(
                "consumer_start_failed", consumer=consumer.name, error=repr(exc), retry_in=delay
            )
        try:
            await asyncio.wait_for(stop.wait(), delay)
        except TimeoutError:
            delay = min(delay * 2, CONNECT_RETRY_MAX_S)
    return None
