"""The publisher's contract on :class:`outbox.publisher.AmqpPublisher` and RabbitMQ."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aio_pika
import pytest

from outbox.publisher import AmqpPublisher
from shared.config import Settings
from shared.messaging import EVENTS_EXCHANGE
from tests.contracts.publisher import ROUTED, PublisherContract
from tests.support import free_port


@dataclass
class AmqpWorld:
    publisher: AmqpPublisher
    down: AmqpPublisher
    queue: aio_pika.abc.AbstractQueue

    async def delivered(self) -> list[str]:
        ids = []
        while (message := await self.queue.get(fail=False, no_ack=True)) is not None:
            ids.append(str(message.message_id))
        return ids


class TestAmqpPublisher(PublisherContract):
    @pytest.fixture
    async def world(self, settings: Settings) -> AsyncIterator[AmqpWorld]:
        connection = await aio_pika.connect(settings.broker.url)
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(f"contract.{uuid.uuid4().hex[:8]}", exclusive=True)
        await queue.bind(exchange, ROUTED)
        publisher = AmqpPublisher(settings.broker.url, producer="contract")
        down = AmqpPublisher(f"amqp://guest:guest@127.0.0.1:{free_port()}/", producer="contract")
        try:
            yield AmqpWorld(publisher, down, queue)
        finally:
            await publisher.close()
            await connection.close()
