"""The dead-letter store's contract on :class:`AmqpDeadLetterStore` and RabbitMQ."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aio_pika
import pytest

from amsctl.dlq.broker import AmqpDeadLetterStore
from shared.config import Settings
from tests.contracts.dead_letters import DeadLetterStoreContract, headers


@dataclass
class AmqpWorld:
    store: AmqpDeadLetterStore
    work: str
    channel: aio_pika.abc.AbstractChannel

    async def add(self, message_id: str, error_type: str, failed_queue: str = "") -> None:
        message = aio_pika.Message(
            b"{}", message_id=message_id, type="user.registered",
            headers=headers(error_type, failed_queue or self.work),
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        await self.channel.default_exchange.publish(message, routing_key=self.work + ".dlq")

    async def remaining(self) -> list[str]:
        letters = await self.store.browse(self.work + ".dlq", limit=100)
        return [dl.message_id for dl in letters]

    async def arrived(self) -> list[tuple[str, dict[str, Any]]]:
        queue = await self.channel.get_queue(self.work)
        found = []
        while (message := await queue.get(fail=False, no_ack=True)) is not None:
            found.append((str(message.message_id), dict(message.headers or {})))
        return found


class TestAmqpDeadLetterStore(DeadLetterStoreContract):
    @pytest.fixture
    async def world(self, settings: Settings) -> AsyncIterator[AmqpWorld]:
        work = f"contract{uuid.uuid4().hex[:8]}"
        connection = await aio_pika.connect(settings.rabbitmq_url)
        channel = await connection.channel(publisher_confirms=True)
        queues = [await channel.declare_queue(name, durable=True) for name in (work, work + ".dlq")]
        try:
            async with AmqpDeadLetterStore(settings) as store:
                yield AmqpWorld(store, work, channel)
        finally:
            for queue in queues:
                await queue.delete(if_unused=False, if_empty=False)
            await connection.close()
