"""Several broker nodes in RABBITMQ_URL: connect to one that answers, fail over to the next.

A closed local port stands in for a dead node; the real node is the local broker (own vhost).
The three-node cluster and real node failures are exercised by tests/cluster.
"""

from __future__ import annotations

import asyncio

import aio_pika
import pytest

from shared.broker import BrokerUnavailable, FailoverConnection, connect, connect_plain, node_urls
from shared.config import Settings
from shared.rabbitmq_admin import ManagementClient
from tests.support import free_port


def dead_node() -> str:
    return f"amqp://guest:guest@127.0.0.1:{free_port()}/"


def test_node_urls_split_a_list_and_refuse_what_is_not_amqp() -> None:
    assert node_urls(" amqp://a:5672/ , amqp://b:5672/v ,") == ["amqp://a:5672/", "amqp://b:5672/v"]
    with pytest.raises(ValueError, match="not an amqp"):
        node_urls("amqp://a/,http://b/")
    with pytest.raises(ValueError, match="no broker node"):
        node_urls(" , ")


async def test_plain_connection_skips_a_dead_node(settings: Settings) -> None:
    connection, index = await connect_plain(
        f"{dead_node()},{settings.broker.url}", name="test", connect_timeout_s=5
    )
    try:
        assert index == 1
        channel = await connection.channel()
        await channel.declare_queue("", exclusive=True)
    finally:
        await connection.close()
    with pytest.raises(BrokerUnavailable, match="no RabbitMQ node answered"):
        await connect_plain(f"{dead_node()},{dead_node()}", name="test", connect_timeout_s=2)


async def test_robust_connection_moves_to_the_next_node_and_back(settings: Settings) -> None:
    """Its node goes away: the connection tries the next one (dead here), then the one after
    (the live node again), and restores its channel and queue by itself."""
    dead = dead_node()
    connection = await connect(f"{dead},{settings.broker.url}", name="test")
    assert isinstance(connection, FailoverConnection)
    try:
        assert str(connection.url.port) != dead.rsplit(":", 1)[1].strip("/")
        reconnected = asyncio.Event()
        connection.reconnect_callbacks.add(lambda *_: reconnected.set())
        channel = await connection.channel()
        queue = await channel.declare_queue("failover-probe", auto_delete=True)
        assert connection.transport is not None
        await connection.transport.connection.close()  # the node is gone for this client
        await asyncio.wait_for(reconnected.wait(), 30)
        await channel.default_exchange.publish(
            aio_pika.Message(b"x"), routing_key=queue.name
        )
        message = await queue.get(timeout=5, fail=False)
        assert message is not None
        await message.ack()
    finally:
        await connection.close()


def test_management_client_tries_the_next_node(settings: Settings) -> None:
    dead = f"http://guest:guest@127.0.0.1:{free_port()}/"
    with ManagementClient(f"{dead},{settings.broker.management_url}") as mgmt:
        assert isinstance(mgmt.queues("/"), list)
