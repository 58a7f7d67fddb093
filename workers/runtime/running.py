"""A started consumer: its connection, channels, database engine and the messages in flight.

:meth:`Consumer.start <workers.runtime.consumer.Consumer.start>` returns one. It declares
the consumer's queues, consumes its partition's queue below aio-pika
(:mod:`workers.runtime.amqp`), queues every delivery behind its aggregate
(:mod:`workers.runtime.ordering`), applies them alone or in batches
(:mod:`workers.runtime.batching`, :mod:`workers.runtime.processor`) and acks in bulk
(:mod:`workers.runtime.acks`); :meth:`RunningConsumer.stop` stops taking messages and
lets those in flight finish.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import aio_pika
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from sqlalchemy.ext.asyncio import AsyncEngine

from shared import messaging as m
from shared.broker import connect, connect_plain, declare_topology
from shared.config import Settings
from shared.logging import get_logger
from shared.topology import parse_retry_delays, topology_of
from workers.runtime.acks import Acks
from workers.runtime.amqp import Delivery, InboundMessage, Subscription
from workers.runtime.batching import Batcher
from workers.runtime.ordering import KeyedSerializer
from workers.runtime.processor import Processor, RetryPolicy
from workers.runtime.sessions import handler_sessions, runtime_engine

if TYPE_CHECKING:
    from workers.runtime.consumer import Consumer

log = get_logger(__name__)

CANCEL_TIMEOUT_S = 5.0


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
