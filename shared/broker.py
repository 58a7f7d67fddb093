"""RabbitMQ connections and topology declaration (aio-pika)."""

from __future__ import annotations

import json
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection
from aiormq.exceptions import ChannelPreconditionFailed

from shared import topology
from shared.logging import get_logger

log = get_logger(__name__)


async def connect(url: str, *, name: str) -> AbstractRobustConnection:
    """A robust connection: it reconnects and restores channels by itself."""
    return await aio_pika.connect_robust(url, client_properties={"connection_name": name})


async def declare_topology(
    channel: AbstractChannel, topo: topology.Topology = topology.DEFAULT
) -> list[str]:
    """Declare the exchanges, queues and bindings of ``topo`` (default: the product's).

    Idempotent. ``channel`` must be a plain (non-robust) channel: a queue that already
    exists with other arguments (an older delivery limit, say) is kept as it is, with a
    warning, and the channel is reopened. Returns the names of the queues kept that way.
    """
    exchanges: dict[str, AbstractExchange] = {}
    for ex in topo.exchanges:
        exchanges[ex.name] = await channel.declare_exchange(
            ex.name, ex.type, durable=ex.durable, internal=ex.internal, arguments=ex.arguments
        )
    kept = [q.name for q in topo.queues if not await declare_queue(channel, q)]
    for b in topo.bindings:
        source = exchanges[b.exchange]
        arguments = b.arguments or None
        if b.destination_type == "exchange":
            await exchanges[b.destination].bind(
                source, routing_key=b.routing_key, arguments=arguments
            )
        else:
            queue = await channel.get_queue(b.destination, ensure=False)
            await queue.bind(source, routing_key=b.routing_key, arguments=arguments)
    return kept


async def declare_queue(channel: AbstractChannel, queue: topology.Queue) -> bool:
    """Declare ``queue``; False if it exists with other arguments (then it is left alone)."""
    try:
        await channel.declare_queue(queue.name, durable=queue.durable, arguments=queue.arguments)
    except ChannelPreconditionFailed as exc:
        log.warning("queue_arguments_differ", queue=queue.name, detail=str(exc))
        await channel.reopen()
        await channel.declare_queue(queue.name, passive=True)
        return False
    return True


def definitions(vhost: str = "/", topo: topology.Topology = topology.DEFAULT) -> dict[str, Any]:
    """The topology in the management plugin's definitions format."""
    return {
        "rabbit_version": "3.10.8",
        "vhosts": [{"name": vhost}],
        "exchanges": [
            {
                "name": ex.name, "vhost": vhost, "type": ex.type, "durable": ex.durable,
                "auto_delete": False, "internal": ex.internal, "arguments": ex.arguments,
            }
            for ex in topo.exchanges
        ],
        "queues": [
            {"name": q.name, "vhost": vhost, "durable": q.durable, "auto_delete": False,
             "arguments": q.arguments}
            for q in topo.queues
        ],
        "bindings": [
            {"source": b.exchange, "vhost": vhost, "destination": b.destination,
             "destination_type": b.destination_type, "routing_key": b.routing_key,
             "arguments": b.arguments}
            for b in topo.bindings
        ],
        "policies": [
            {"vhost": vhost, "name": p.name, "pattern": p.pattern, "apply-to": p.apply_to,
             "definition": p.definition, "priority": p.priority}
            for p in topo.policies
        ],
    }


def definitions_json(vhost: str = "/") -> str:
    return json.dumps(definitions(vhost), indent=2, sort_keys=True) + "\n"
