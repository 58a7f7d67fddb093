"""Publishing outbox rows: the port, the AMQP adapter and an in-memory fake.

The AMQP adapter deliberately uses a plain (not robust) connection. A robust connection
reconnects behind the caller's back, so a later batch could go out on a new connection
while an earlier batch's fate on the old one is still unknown, and one aggregate's
events could overtake each other. Here the relay owns reconnection: after a connection
error it waits for every in-flight batch, reconnects, and claims again in id order.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Protocol

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection
from pamqp.commands import Basic
from pamqp.common import FieldTable

from outbox.rows import OutboxRow
from shared.messaging import (
    CONTENT_TYPE,
    EVENTS_EXCHANGE,
    H_AGGREGATE_ID,
    H_AGGREGATE_SLOT,
    H_AGGREGATE_TYPE,
    H_CORRELATION_ID,
    H_PRODUCER,
    H_SCHEMA_VERSION,
    aggregate_slot,
)
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
    headers: FieldTable = json.loads(row.headers) if row.headers != "{}" else {}
    headers[H_AGGREGATE_TYPE] = row.aggregate_type
    headers[H_AGGREGATE_ID] = row.aggregate_id
    headers[H_AGGREGATE_SLOT] = aggregate_slot(row.aggregate_id)
    headers[H_SCHEMA_VERSION] = row.schema_version
    headers[H_PRODUCER] = producer
    if row.correlation_id:
        headers[H_CORRELATION_ID] = row.correlation_id
    return Basic.Properties(
        content_type=CONTENT_TYPE,
        delivery_mode=2,
        message_id=str(row.event_id),
        message_type=row.event_type,
        timestamp=row.created_at,
        correlation_id=row.correlation_id,
        app_id=producer,
        headers=headers,
    )


class AmqpPublisher:
    """Publishes to the ``events`` exchange with publisher confirms and ``mandatory`` (except
    for :data:`shared.topology.UNCONSUMED_EVENTS`)."""

    def __init__(self, url: str, *, producer: str, exchange: str = EVENTS_EXCHANGE) -> None:
        self._url = url
        self._producer = producer
        self._exchange = exchange
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None

    async def connect(self) -> None:
        await self.close()
        self._connection = await aio_pika.connect(
            self._url, client_properties={"connection_name": f"outbox-relay:{self._producer}"}
        )
        self._channel = await self._connection.channel(
            publisher_confirms=True, on_return_raises=True
        )

    async def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and not connection.is_closed:
            try:
                await connection.close()
            except (OSError, aiormq.exceptions.AMQPError):
                return

    async def publish(self, rows: Sequence[OutboxRow]) -> list[RejectedByBroker | None]:
        if self._channel is None or self._channel.is_closed:
            raise PublisherUnavailable("not connected to RabbitMQ")
        try:
            channel = await self._channel.get_underlay_channel()
        except (aiormq.exceptions.AMQPError, OSError, RuntimeError) as exc:
            raise PublisherUnavailable(str(exc)) from exc
        # Tasks start in order and each writes its frames without yielding first, so the
        # broker receives the rows in id order; the confirms are awaited together.
        results = await asyncio.gather(
            *(
                channel.basic_publish(  # type: ignore[call-arg]
                    row.payload.encode(),
                    exchange=self._exchange,
                    routing_key=row.routing_key,
                    properties=properties(row, self._producer),
                    # Unroutable is an error only for events some consumer must get.
                    mandatory=row.routing_key not in UNCONSUMED_EVENTS,
                    wait=False,  # confirms are awaited below; no per-message drain
                )
                for row in rows
            ),
            return_exceptions=True,
        )
        return [self._outcome(result) for result in results]

    @staticmethod
    def _outcome(result: object) -> RejectedByBroker | None:
        if isinstance(result, Basic.Ack):
            return None
        if isinstance(result, aiormq.exceptions.PublishError):
            return RejectedByBroker(
                f"unroutable: no queue is bound for this routing key ({result})"
            )
        if isinstance(result, aiormq.exceptions.DeliveryError):
            return RejectedByBroker(f"nacked by the broker: {result}")
        if isinstance(result, BaseException):
            raise PublisherUnavailable(f"{type(result).__name__}: {result}") from result
        return RejectedByBroker(f"unexpected confirm {result!r}")


class FakePublisher:
    """In-memory publisher for unit tests; ``unroutable`` routing keys are rejected."""

    def __init__(self, *, unroutable: Sequence[str] = ()) -> None:
        self.published: list[OutboxRow] = []
        self.unroutable = set(unroutable)
        self.connected = False
        self.down = False

    async def connect(self) -> None:
        if self.down:
            raise PublisherUnavailable("fake broker is down")
        self.connected = True

    async def close(self) -> None:
        self.connected = False

    async def publish(self, rows: Sequence[OutboxRow]) -> list[RejectedByBroker | None]:
        if self.down or not self.connected:
            self.connected = False
            raise PublisherUnavailable("fake broker is down")
        outcomes: list[RejectedByBroker | None] = []
        for row in rows:
            if row.routing_key in self.unroutable:
                outcomes.append(RejectedByBroker("unroutable"))
            else:
                self.published.append(row)
                outcomes.append(None)
        return outcomes
