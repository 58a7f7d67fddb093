"""RabbitMQ connections and topology declaration (aio-pika)."""

from __future__ import annotations

import json
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from shared import topology


async def connect(url: str, *, name: str) -> AbstractRobustConnection:
    """A robust connection: it reconnects and restores channels by itself."""
    return await aio_pika.connect_robust(url, client_properties={"connection_name": name})


async def declare_topology(channel: AbstractChannel) -> None:
    """Declare every exchange, queue and binding of :mod:`shared.topology` (idempotent)."""
    exchanges = {}
    for ex in topology.EXCHANGES:
        exchanges[ex.name] = await channel.declare_exchange(
            ex.name, ex.type, durable=ex.durable, internal=ex.internal, arguments=ex.arguments
        )
    for q in topology.QUEUES:
        await channel.declare_queue(q.name, durable=q.durable, arguments=q.arguments)
    for b in topology.BINDINGS:
        queue = await channel.get_queue(b.queue, ensure=False)
        await queue.bind(exchanges[b.exchange], routing_key=b.routing_key)


def definitions(vhost: str = "/") -> dict[str, Any]:
    """The topology in the management plugin's definitions format."""
    return {
        "rabbit_version": "3.10.8",
        "vhosts": [{"name": vhost}],
        "exchanges": [
            {
                "name": ex.name, "vhost": vhost, "type": ex.type, "durable": ex.durable,
                "auto_delete": False, "internal": ex.internal, "arguments": ex.arguments,
            }
            for ex in topology.EXCHANGES
        ],
        "queues": [
            {"name": q.name, "vhost": vhost, "durable": q.durable, "auto_delete": False,
             "arguments": q.arguments}
            for q in topology.QUEUES
        ],
        "bindings": [
            {"source": b.exchange, "vhost": vhost, "destination": b.queue,
             "destination_type": "queue", "routing_key": b.routing_key, "arguments": {}}
            for b in topology.BINDINGS
        ],
    }


def definitions_json(vhost: str = "/") -> str:
    return json.dumps(definitions(vhost), indent=2, sort_keys=True) + "\n"
