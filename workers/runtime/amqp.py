"""Consuming below aio-pika's ``IncomingMessage``: one light object per delivery.

aio-pika builds an ``IncomingMessage`` per delivery (every property decoded into a
validated attribute) and runs the callback in a task of its own, on top of the task
aiormq already starts. The runtime reads a handful of properties and acks in bulk, so
it consumes on the robust channel's underlying aiormq channel and wraps each delivery in
a :class:`Delivery` (``__slots__``, properties read when asked). The robust connection
still reconnects and reopens the channel (QoS restored); :class:`Subscription` then
consumes again on the reopened channel, with the same consumer tag.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

import aiormq
from aio_pika.abc import AbstractRobustChannel
from aiormq.abc import DeliveredMessage
from aiormq.exceptions import AMQPError, ChannelInvalidStateError
from pamqp import commands as spec

from shared.logging import get_logger

log = get_logger(__name__)

RECONSUME_MAX_S = 30.0


class InboundMessage(Protocol):
    """What the runtime uses of a delivery (aio-pika's ``IncomingMessage`` has it too)."""

    @property
    def body(self) -> bytes: ...
    @property
    def headers(self) -> dict[str, Any]: ...
    @property
    def message_id(self) -> str | None: ...
    @property
    def correlation_id(self) -> str | None: ...
    @property
    def type(self) -> str | None: ...
    @property
    def content_type(self) -> str | None: ...
    @property
    def content_encoding(self) -> str | None: ...
    @property
    def timestamp(self) -> datetime | None: ...
    @property
    def app_id(self) -> str | None: ...
    @property
    def delivery_tag(self) -> int | None: ...
    @property
    def redelivered(self) -> bool | None: ...
    @property
    def routing_key(self) -> str | None: ...
    @property
    def channel(self) -> object: ...

    async def ack(self, multiple: bool = False) -> None: ...
    async def nack(self, multiple: bool = False, requeue: bool = True) -> None: ...


class Delivery:
    """One delivery of a consumer with manual acks, read straight off aiormq's frames."""

    __slots__ = ("_channel", "_properties", "body", "delivery_tag", "redelivered", "routing_key")

    def __init__(self, message: DeliveredMessage) -> None:
        deliver = message.delivery
        assert isinstance(deliver, spec.Basic.Deliver), "consumers receive Basic.Deliver"
        self._channel = message.channel
        self._properties = message.header.properties
        self.body: bytes = message.body
        self.delivery_tag: int | None = deliver.delivery_tag
        self.redelivered: bool | None = deliver.redelivered
        self.routing_key: str | None = deliver.routing_key

    @property
    def headers(self) -> dict[str, Any]:
        return self._properties.headers or {}

    @property
    def message_id(self) -> str | None:
        return self._properties.message_id

    @property
    def correlation_id(self) -> str | None:
        return self._properties.correlation_id

    @property
    def type(self) -> str | None:
        return self._properties.message_type

    @property
    def content_type(self) -> str | None:
        return self._properties.content_type

    @property
    def content_encoding(self) -> str | None:
        return self._properties.content_encoding

    @property
    def timestamp(self) -> datetime | None:
        return self._properties.timestamp

    @property
    def app_id(self) -> str | None:
        return self._properties.app_id

    @property
    def channel(self) -> aiormq.abc.AbstractChannel:
        """The channel it came on; ``ChannelInvalidStateError`` once that channel closed."""
        if self._channel.is_closed:
            raise ChannelInvalidStateError("the channel of this delivery is closed")
        return self._channel

    async def ack(self, multiple: bool = False) -> None:
        assert self.delivery_tag is not None
        await self.channel.basic_ack(self.delivery_tag, multiple=multiple)

    async def nack(self, multiple: bool = False, requeue: bool = True) -> None:
        assert self.delivery_tag is not None
        await self.channel.basic_nack(self.delivery_tag, multiple=multiple, requeue=requeue)


OnDelivery = Callable[[Delivery], Any]


class Subscription:
    """Consumes ``queue`` on a robust channel for as long as it is not cancelled.

    ``on_delivery`` is called synchronously for each delivery, in delivery order. After
    the robust connection reopened the channel, consuming starts again; if the broker
    cancels the consumer (its queue was deleted), it is tried again with backoff until
    the queue is back.
    """

    def __init__(self, channel: AbstractRobustChannel, queue: str, on_delivery: OnDelivery) -> None:
        self._channel = channel
        self._queue = queue
        self._on_delivery = on_delivery
        self._tag: str | None = None
        self._cancelled = False
        self._retry: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._channel.reopen_callbacks.add(self._on_reopen)
        await self._consume()

    async def cancel(self) -> None:
        """Stop consuming (deliveries already received are still handled)."""
        self._cancelled = True
        self._channel.reopen_callbacks.discard(self._on_reopen)
        if self._retry is not None:
            self._retry.cancel()
        if self._tag is not None and not self._channel.is_closed:
            underlay = await self._channel.get_underlay_channel()
            await underlay.basic_cancel(self._tag)

    async def _consume(self) -> None:
        underlay = await self._channel.get_underlay_channel()
        underlay.on_consumer_cancel_callbacks.add(self._on_broker_cancel)
        ok = await underlay.basic_consume(self._queue, self._deliver, consumer_tag=self._tag)
        self._tag = ok.consumer_tag

    async def _deliver(self, message: DeliveredMessage) -> None:
        # aiormq runs this in a task per delivery, started in delivery order; nothing is
        # awaited before ``on_delivery``, so it sees the deliveries in that order.
        self._on_delivery(Delivery(message))

    async def _on_reopen(self, *_: object) -> None:
        if self._cancelled or self._retrying:
            return
        try:
            await self._consume()
        except (AMQPError, ChannelInvalidStateError, ConnectionError) as exc:
            log.warning("consume_after_reopen_failed", queue=self._queue, error=repr(exc))
            self._start_retry()

    def _on_broker_cancel(self, frame: spec.Basic.Cancel) -> None:
        if frame.consumer_tag != self._tag or self._cancelled:
            return
        log.error("consumer_cancelled_by_broker", queue=self._queue)
        self._start_retry()

    @property
    def _retrying(self) -> bool:
        return self._retry is not None and not self._retry.done()

    def _start_retry(self) -> None:
        if not self._retrying:
            self._retry = asyncio.create_task(self._consume_again())

    async def _consume_again(self) -> None:
        # One attempt at a time, with backoff: a failed basic.consume (queue missing) closes
        # the channel, and the robust channel reopens it before the next attempt.
        delay = 1.0
        while not self._cancelled:
            await asyncio.sleep(delay)
            try:
                await self._consume()
            except (AMQPError, ChannelInvalidStateError, ConnectionError) as exc:
                log.warning("reconsume_failed", queue=self._queue, error=repr(exc), retry_in=delay)
                delay = min(delay * 2, RECONSUME_MAX_S)
            else:
                log.info("consuming_again", queue=self._queue)
                return
