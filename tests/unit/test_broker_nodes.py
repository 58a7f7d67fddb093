"""Which broker node a process starts at: a random one of ``RABBITMQ_URL``'s list, so that a
cluster's clients spread over its nodes; failing over walks on from there."""

from __future__ import annotations

from typing import Any

import pytest

from outbox import publisher as publishing
from shared import broker

NODES = "amqp://a/,amqp://b/,amqp://c/"


def test_processes_start_at_every_node_of_a_cluster_and_a_single_node_at_it() -> None:
    assert {broker.first_node(3) for _ in range(300)} == {0, 1, 2}
    assert {broker.first_node(1) for _ in range(20)} == {0}


async def test_a_plain_connection_starts_at_the_processs_node_and_walks_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tried: list[str] = []

    async def refused(url: str, **_: Any) -> None:
        tried.append(url)
        raise ConnectionRefusedError(f"{url} refused")

    monkeypatch.setattr(broker.aio_pika, "connect", refused)
    monkeypatch.setattr(broker, "first_node", lambda count: 2)
    with pytest.raises(broker.BrokerUnavailable, match="no RabbitMQ node answered"):
        await broker.connect_plain(NODES, name="test")
    assert tried == ["amqp://c/", "amqp://a/", "amqp://b/"]


async def test_the_relays_publisher_starts_at_its_node_and_walks_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tried: list[str] = []

    async def refused(self: publishing.AmqpPublisher, url: str) -> None:
        tried.append(url)
        raise publishing.PublisherUnavailable(f"{url} refused")

    monkeypatch.setattr(publishing.AmqpPublisher, "_open", refused)
    monkeypatch.setattr(publishing, "first_node", lambda count: 1)
    relay = publishing.AmqpPublisher(NODES, producer="authdb", exchange="events")
    with pytest.raises(publishing.PublisherUnavailable):
        await relay.connect()
    assert tried == ["amqp://b/", "amqp://c/", "amqp://a/"]
