"""Publishing outbox rows: the port and the AMQP adapter (the in-memory fake is
``tests.fakes.FakePublisher``).

The AMQP adapter deliberately uses a plain (not robust) connection. A robust connection
reconnects behind the caller's back, so a later batch could go out on a new connection
while an earlier batch's fate on the old one is still unknown, and one aggregate's
events could overtake each other. Here the relay owns reconnection: after a connection
error it waits for every in-flight batch, reconnects, and claims again in id order.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import Protocol

import aiormq
from aiormq.abc import ChannelFrame
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from outbox.frames import FrameEncoder
from outbox.rows import OutboxRow
from shared.broker import first_node, node_urls
from shared.messaging import CONTENT_TYPE, EVENTS_EXCHANGE
from shared.topology import UNCONSUMED_EVENTS


class PublisherUnavailable(ConnectionError):
    """The broker connection is down; nothing in the batch counts as an attempt."""


class RejectedByBroker(Exception):
    """The broker refused one message (nack, or returned as unroutable)."""


class Publisher(Protocol):
    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    async def publish(self, rows: Sequence[OutboxRow]) -> list[RejectedByBroker | None]:
        """Publish ``rows`` in order and wait for every confirm.

        Returns one outcome per row: None when the broker confirmed it, or the
        rejection. Raises :class:`PublisherUnavailable` when the connection failed.
        """
        ...


def properties(row: OutboxRow, producer: str) -> Basic.Properties:
    """The message properties of ``row`` as pamqp objects: what :mod:`outbox.frames`
    encodes directly (kept as the reference the frame encoder is tested against)."""
    encoder = FrameEncoder(channel=1, frame_max=0, exchange=EVENTS_EXCHANGE, producer=producer)
    return Basic.Properties(
        content_type=CONTENT_TYPE,
        delivery_mode=2,
        message_id=str(row.event_id),
        message_type=row.event_type,
        timestamp=row.created_at,
        correlation_id=row.correlation_id,
        app_id=producer,
        headers=encoder.headers(row),
    )


def mandatory(routing_key: str) -> bool:
    """Unroutable is an error only for events some consumer must get."""
    return routing_key not in UNCONSUMED_EVENTS


_NACKED = RejectedByBroker("nacked by the broker")


class _Batch:
    """One published batch: delivery tags ``first`` … ``first + len(outcomes) - 1``."""

    __slots__ = ("first", "future", "message_ids", "open", "outcomes", "scanned")

    def __init__(self, first: int, message_ids: Sequence[str], future: asyncio.Future[None]):
        self.first = first
        self.message_ids = message_ids
        self.outcomes: list[RejectedByBroker | object | None] = [_OPEN] * len(message_ids)
        self.open = len(message_ids)
        self.scanned = 0
        """Outcomes before this index are all settled (multiple acks settle a prefix)."""
        self.future = future

    def settle(self, index: int, outcome: RejectedByBroker | None) -> None:
        if self.outcomes[index] is _OPEN:
            self.outcomes[index] = outcome
            self.open -= 1

    def settle_through(self, last_tag: int, outcome: RejectedByBroker | None) -> None:
        end = min(last_tag - self.first + 1, len(self.outcomes))
        outcomes = self.outcomes
        for index in range(self.scanned, end):
            if outcomes[index] is _OPEN:
                outcomes[index] = outcome
                self.open -= 1
        self.scanned = max(self.scanned, end)


_OPEN = object()


class BatchChannel(aiormq.Channel):
    """An aiormq channel in confirm mode whose publishes are whole batches.

    aiormq's ``basic_publish`` costs a frame object set, a lock round, a queue item and a
    future per message, and resolves ``multiple`` acks one ``call_soon`` per tag. Here a
    batch is one pre-encoded buffer (:mod:`outbox.frames`), one queue item, one write and
    one future; acks and nacks settle ranges of delivery tags; a returned (unroutable)
    message is found by its message id among the batches still open. Reading, heartbeats
    and closing stay aiormq's. One batch publisher per channel: nothing else may publish
    on it, or the delivery tags would drift.
    """

    def __init__(self, connection: aiormq.Connection, number: int) -> None:
        super().__init__(connection, number, publisher_confirms=True, on_return_raises=True)
        self._batches: deque[_Batch] = deque()
        self._next_tag = 1

    async def publish_batch(
        self, payload: bytes, message_ids: Sequence[str]
    ) -> list[RejectedByBroker | None]:
        """Write ``payload`` (the frames of ``len(message_ids)`` messages) and wait for every
        confirm. Raises :class:`PublisherUnavailable` when the channel closes first."""
        if self.is_closed:
            raise PublisherUnavailable("the RabbitMQ channel is closed")
        drained = self.create_future()
        await self.write_queue.put(ChannelFrame(payload, False, drained))
        # No await between the queue taking the buffer and the tags being assigned, so
        # tags follow the write order even with several batches waiting to be queued.
        batch = _Batch(self._next_tag, message_ids, self.create_future())
        self._next_tag += len(message_ids)
        self._batches.append(batch)
        await _settled(drained)  # backpressure: the socket took the buffer
        await _settled(batch.future)
        return batch.outcomes  # type: ignore[return-value]  # all settled now

    async def _on_confirm_frame(self, frame: Basic.Ack | Basic.Nack) -> None:  # type: ignore[override]
        outcome = None if isinstance(frame, Basic.Ack) else _NACKED
        tag = frame.delivery_tag
        for batch in list(self._batches):
            if batch.first > tag:
                break
            if frame.multiple:
                batch.settle_through(tag, outcome)
            elif tag < batch.first + len(batch.outcomes):
                batch.settle(tag - batch.first, outcome)
            self._finish(batch)

    async def _on_return_frame(self, frame: Basic.Return) -> None:
        header = await self._get_frame()
        if not isinstance(header, ContentHeader):
            raise aiormq.exceptions.InvalidFrameError(header)
        await self._read_content(frame, header)  # the returned body is not needed
        message_id = header.properties.message_id
        error = RejectedByBroker(
            f"unroutable: no queue is bound for this routing key "
            f"({frame.reply_code} {frame.reply_text}, {frame.routing_key})"
        )
        for batch in self._batches:
            for index, candidate in enumerate(batch.message_ids):
                if candidate == message_id and batch.outcomes[index] is _OPEN:
                    batch.settle(index, error)  # its ack follows and is ignored
                    self._finish(batch)
                    return

    def _finish(self, batch: _Batch) -> None:
        if batch.open == 0:
            self._batches.remove(batch)
            if not batch.future.done():
                batch.future.set_result(None)


async def _settled(future: asyncio.Future[None]) -> None:
    """Wait for a future the channel resolves or rejects; any rejection means the
    channel is gone (aiormq rejects its futures on close, with CancelledError too)."""
    await asyncio.wait((future,))
    if future.cancelled():
        raise PublisherUnavailable("the RabbitMQ channel closed")
    exc = future.exception()
    if exc is not None:
        raise PublisherUnavailable(f"{type(exc).__name__}: {exc}") from exc


class AmqpPublisher:
    """Publishes to the ``events`` exchange with publisher confirms and ``mandatory`` (except
    for :data:`shared.topology.UNCONSUMED_EVENTS`), one buffer per batch."""

    def __init__(self, url: str, *, producer: str, exchange: str = EVENTS_EXCHANGE) -> None:
        self._url = url
        self._producer = producer
        self._exchange = exchange
        self._connection: aiormq.Connection | None = None
        self._channel: BatchChannel | None = None
        self._encoder: FrameEncoder | None = None
        self._node = -1

    async def connect(self) -> None:
        """Connect to the first node that answers, starting with the one after the node used
        last (the first time: :func:`shared.broker.first_node`): with several nodes
        (``RABBITMQ_URL`` list), the relay fails over."""
        await self.close()
        nodes = node_urls(self._url)
        begin = first_node(len(nodes)) if self._node < 0 else self._node + 1
        errors: list[str] = []
        for step in range(len(nodes)):
            index = (begin + step) % len(nodes)
            try:
                connection, channel = await self._open(nodes[index])
            except PublisherUnavailable as exc:
                errors.append(str(exc))
                continue
            self._node = index
            break
        else:
            raise PublisherUnavailable("no RabbitMQ node answered: " + "; ".join(errors))
        self._connection, self._channel = connection, channel
        self._encoder = FrameEncoder(
            channel=CHANNEL,
            frame_max=connection.connection_tune.frame_max,
            exchange=self._exchange,
            producer=self._producer,
        )

    async def _open(self, url: str) -> tuple[aiormq.Connection, BatchChannel]:
        connection = aiormq.Connection(
            url, client_properties={"connection_name": f"outbox-relay:{self._producer}"}
        )
        try:
            await asyncio.wait_for(connection.connect(), CONNECT_TIMEOUT_S)
            channel = BatchChannel(connection, CHANNEL)
            connection.channels[CHANNEL] = channel
            await channel.open()
        except (aiormq.exceptions.AMQPError, OSError, RuntimeError, TimeoutError) as exc:
            await _close_quietly(connection)
            raise PublisherUnavailable(f"{type(exc).__name__}: {exc}") from exc
        return connection, channel

    async def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            await _close_quietly(connection)

    async def publish(self, rows: Sequence[OutboxRow]) -> list[RejectedByBroker | None]:
        channel, encoder = self._channel, self._encoder
        if channel is None or encoder is None or channel.is_closed:
            raise PublisherUnavailable("not connected to RabbitMQ")
        payload = encoder.batch(rows, mandatory)
        return await channel.publish_batch(payload, [str(row.event_id) for row in rows])


CHANNEL = 1
CONNECT_TIMEOUT_S = 10.0
"""The relay's one channel on its own connection."""


async def _close_quietly(connection: aiormq.Connection) -> None:
    if connection.is_closed:
        return
    try:
        await connection.close()
    except (OSError, aiormq.exceptions.AMQPError, RuntimeError):
        return

