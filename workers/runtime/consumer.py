"""The consumer runtime every worker uses.

A :class:`Consumer` is a name (its work queue), a database and one table of handlers
(event class -> handler). The runtime takes messages from the durable queue with a
robust connection, runs each handler with the inbox row in the same transaction as its
effect, acks only after the commit, and maps failures once (:mod:`workers.runtime.failures`):
retry after a delay through ``<consumer>.retry.<delay>``, or park in ``<consumer>.dlq``
with the reason attached (:mod:`workers.runtime.processor`).

Parallelism: up to ``prefetch`` messages are in flight; messages with the same
``x-aggregate-id`` run one after another in arrival order, others in parallel. A message
sent to a retry queue no longer holds up later messages of its aggregate: a poison
message must not block what comes behind it. Beyond one core, a consumer is split into
partitions (``WORKER_PARTITIONS``): each process consumes one partition queue, and every
aggregate belongs to exactly one partition (:mod:`workers.runtime.partitions`).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import aio_pika
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from prometheus_client import start_http_server
from sqlalchemy.ext.asyncio import AsyncEngine

from shared import messaging as m
from shared.broker import connect, connect_plain, declare_topology
from shared.config import Settings
from shared.db import create_engine
from shared.errors import AmsError
from shared.events import Message
from shared.logging import get_logger
from shared.topology import ConsumerSpec, parse_retry_delays, topology_of
from workers.runtime.acks import Acks
from workers.runtime.amqp import Delivery, InboundMessage, Subscription
from workers.runtime.batching import Batcher
from workers.runtime.ordering import KeyedSerializer
from workers.runtime.processor import Processor, RetryPolicy
from workers.runtime.sessions import Handler, handler_sessions

log = get_logger(__name__)

CONNECT_RETRY_MAX_S = 30.0
CANCEL_TIMEOUT_S = 5.0


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
    background tasks (:func:`runtime_engine`; made at start when not given). ``run`` calls
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


def runtime_engine(
    settings: Settings, database: str, *, batch_max: int | None = None
) -> AsyncEngine:
    """The engine a consumer's runtime, handlers and background tasks share (no I/O yet)."""
    batch = batch_max or settings.worker.batch_max
    return create_engine(
        settings.database.url(database),
        pool_size=max(settings.database.pool_size, 1),
        # A batch that fails on a dead connection is run again message by message, on
        # fresh connections (the failure invalidates the pool): no ping needed. One
        # message per transaction (OCR) keeps the ping: no attempt is wasted.
        pre_ping=batch == 1,
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


class RunningConsumer:
    """A started consumer: its connection, channels, pool, and the messages in flight."""

    def __init__(self, consumer: Consumer, settings: Settings, partition: int = 0) -> None:
        self.consumer = consumer
        self.settings = settings
        self.consumer_spec = consumer.spec_for(settings)  # every partition
        self.spec = self.consumer_spec.for_partition(partition)  # the one consumed here
        self.prefetch = consumer.prefetch or settings.worker.prefetch
        self.policy = RetryPolicy(
            max_attempts=consumer.max_attempts or settings.worker.max_attempts,
            delays=parse_retry_delays(consumer.retry_delays or settings.worker.retry_delays),
        )
        self.reconnects = 0
        self.received = 0  # deliveries taken from the queue
        self._stopping = False
        self._serializer = KeyedSerializer()
        self._executor = ThreadPoolExecutor(
            settings.worker.blocking_threads, thread_name_prefix=f"{consumer.name}-blocking"
        )
        self._engine: AsyncEngine | None = None
        self._connection: AbstractRobustConnection | None = None
        self._subscription: Subscription | None = None
        self._processor: Processor | None = None
        self._batcher: Batcher[InboundMessage] | None = None
        self._acks: Acks | None = None

    @property
    def in_flight(self) -> int:
        return self._serializer.in_flight

    @property
    def connection(self) -> AbstractRobustConnection:
        assert self._connection is not None, "not started"
        return self._connection

    async def start(self) -> None:
        """Declare, connect, consume. A failure part-way closes what was opened (a robust
        connection left behind would reconnect forever; the caller retries with a new one)."""
        await self._declare_topology()
        try:
            await self._open()
        except BaseException:
            await self._close()
            raise

    async def _open(self) -> None:
        batch_max = self.consumer.batch_max or self.settings.worker.batch_max
        self._engine = self.consumer.engine or runtime_engine(
            self.settings, self.consumer.database, batch_max=batch_max
        )
        connection = await connect(
            self.settings.broker.url, name=f"worker:{self.spec.queue_name}"
        )
        self._connection = connection
        connection.reconnect_callbacks.add(self._on_reconnect)
        publisher = await connection.channel(publisher_confirms=True, on_return_raises=True)
        # Bulk acks only with batches: one message at a time (OCR) acks each on its own.
        self._acks = Acks() if batch_max > 1 else None
        self._processor = Processor(
            self.spec, self.consumer.handlers, handler_sessions(self._engine), publisher,
            self.policy, executor=self._executor, acks=self._acks,
            max_body_bytes=self.settings.worker.max_message_bytes,
        )
        if batch_max > 1:
            self._batcher = Batcher(
                self._processor.process_batch, max_batch=batch_max,
                # Few, full batches beat many small ones: commits, not CPUs, are scarce.
                max_concurrency=max(
                    1, min(self.settings.database.pool_size, self.prefetch // batch_max)
                ),
            )
        channel = await connection.channel()
        assert isinstance(channel, AbstractRobustChannel)
        await channel.set_qos(prefetch_count=self.prefetch)
        self._subscription = Subscription(channel, self.spec.queue_name, self._on_message)
        await self._subscription.start()

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop taking messages, let in-flight ones finish (bounded), close everything."""
        self._stopping = True
        if self._subscription is not None:
            try:
                # Bounded: with the broker away, there is nothing to cancel, and unacked
                # messages go back to the queue when the connection is gone anyway.
                await asyncio.wait_for(self._subscription.cancel(), CANCEL_TIMEOUT_S)
            except (TimeoutError, aio_pika.exceptions.AMQPError, OSError, RuntimeError) as exc:
                log.warning("consumer_cancel_failed", error=repr(exc))
        limit = self.settings.worker.shutdown_timeout_s if grace_s is None else grace_s
        if not await self._serializer.drain(limit):
            log.warning("shutdown_timeout", in_flight=self.in_flight)
        if self._acks is not None:
            await self._acks.flush()
        await self._close()

    async def _close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
        if self._engine is not None and self.consumer.engine is None:
            await self._engine.dispose()  # its own; a shared one is the consumer's to dispose
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _declare_topology(self) -> None:
        # A plain connection: a queue with other arguments is kept, and the channel reopened.
        # Every partition at once: each slot is bound before anything is routed through them.
        connection, _ = await connect_plain(
            self.settings.broker.url, name=f"worker:{self.spec.queue_name}:declare"
        )
        try:
            channel = await connection.channel()
            await declare_topology(channel, topology_of((self.consumer_spec,), self.policy.delays))
        finally:
            await connection.close()

    def _on_message(self, message: Delivery) -> None:
        # Synchronous on purpose: the job is queued behind its aggregate in arrival order.
        self.received += 1
        key = message.headers.get(m.H_AGGREGATE_ID) or message.message_id or ""
        if self._acks is not None:
            self._acks.track(message)
        self._serializer.submit(str(key), lambda: self._process(message))

    def _process(self, message: Delivery) -> Awaitable[None]:
        assert self._processor is not None
        if self._stopping:
            # Not started before shutdown: left unacked, the broker hands it out again
            # (in its place) when this connection closes.
            return _done()
        if self._batcher is not None:
            return self._batcher.enqueue(message)
        return self._processor.process(message)

    def _on_reconnect(self, *_: object) -> None:
        self.reconnects += 1
        log.warning("broker_reconnected", consumer=self.spec.name, reconnects=self.reconnects)


async def _done() -> None:
    return None
