"""The dead-letter store's contract on :class:`AmqpDeadLetterStore` and RabbitMQ."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aio_pika
import pytest

from amsctl.dlq.broker import AmqpDeadLetterStore
from shared.broker import declare_topology
from shared.config import Settings
from shared.rabbitmq_admin import ManagementClient
from tests.contracts.dead_letters import DeadLetterStoreContract, headers
from tests.support import MANAGEMENT, RABBITMQ


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
        """A vhost of its own with the product's topology: a replay goes through the replay
        exchange, which reaches the topology's work queues only."""
        vhost = f"ams_dlqc_{uuid.uuid4().hex[:8]}"
        own = settings.replace(rabbitmq_url=f"{RABBITMQ}/{vhost}")
        with ManagementClient(MANAGEMENT) as mgmt:
            mgmt.create_vhost(vhost)
        try:
            connection = await aio_pika.connect(own.broker.url)
            async with connection:
                declaring = await connection.channel()
                # A classic dead-letter queue, as this contract always ran on: a 3.10 quorum
                # queue puts what a partial browse nacks at its back (broker docstring).
                await declaring.declare_queue("profiles.dlq", durable=True)
                await declare_topology(declaring)
                channel = await connection.channel(publisher_confirms=True)
                async with AmqpDeadLetterStore(own) as store:
                    yield AmqpWorld(store, "profiles", channel)
        finally:
            with ManagementClient(MANAGEMENT) as mgmt:
                mgmt.delete_vhost(vhost)
