"""RabbitMQ connections and topology declaration (aio-pika).

Several nodes
-------------
``RABBITMQ_URL`` is one AMQP URL or a comma-separated list of them, one per node of a
cluster (:func:`node_urls`). :func:`connect_plain` connects to the first node that answers,
trying each once; :func:`connect` returns a robust connection that, when its node goes away,
reconnects to the **next** node of the list (and the next, round-robin, for as long as
none answers) and then restores its channels and consumers. Quorum queues are reachable
through any node of the cluster, so a client need not know where a queue's leader is.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Any
from urllib.parse import urlsplit

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractRobustConnection,
)
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from aio_pika.robust_connection import RobustConnection
from aiormq.exceptions import ChannelPreconditionFailed
from yarl import URL

from shared import topology
from shared.logging import get_logger

log = get_logger(__name__)

RECONNECT_INTERVAL_S = 1.0
"""Pause between two reconnection attempts of a robust connection (each to the next node)."""

CONNECT_ERRORS: tuple[type[BaseException], ...] = (*CONNECTION_EXCEPTIONS, TimeoutError)


class BrokerUnavailable(ConnectionError):
    """No node of ``RABBITMQ_URL`` accepted a connection."""


def node_urls(url: str) -> list[str]:
    """The broker nodes ``RABBITMQ_URL`` names: one AMQP URL or a comma-separated list."""
    nodes = [part.strip() for part in url.split(",") if part.strip()]
    if not nodes:
        raise ValueError("RABBITMQ_URL names no broker node")
    for node in nodes:
        if urlsplit(node).scheme not in {"amqp", "amqps"}:
            raise ValueError(f"RABBITMQ_URL: {node!r} is not an amqp:// or amqps:// URL")
    return nodes


def first_node(count: int) -> int:
    """Where a process starts in ``RABBITMQ_URL``'s list of ``count`` nodes: a random one, so
    that a cluster's clients spread over its nodes instead of all sitting on the first (whose
    loss, or a cut to it, would then stall every one of them at once). Failing over walks on
    through the list from there."""
    return secrets.randbelow(count) if count > 1 else 0


def _hide_password(url: str) -> str:
    parsed = URL(url)
    return str(parsed.with_password("***")) if parsed.password else url


async def connect_plain(
    url: str, *, name: str, connect_timeout_s: float = 10.0, start: int | None = None
) -> tuple[AbstractConnection, int]:
    """A plain connection to the first node that answers, trying each once from ``start``
    (default: :func:`first_node`).

    Returns the connection and the index of its node, so that a caller reconnecting after a
    failure can begin with the node after it. Raises :class:`BrokerUnavailable`.
    """
    nodes = node_urls(url)
    if start is None:
        start = first_node(len(nodes))
    errors: list[str] = []
    for step in range(len(nodes)):
        index = (start + step) % len(nodes)
        try:
            connection = await aio_pika.connect(
                nodes[index], timeout=connect_timeout_s, client_properties={"connection_name": name}
            )
        except CONNECT_ERRORS as exc:
            errors.append(f"{_hide_password(nodes[index])}: {exc or type(exc).__name__}")
            continue
        return connection, index
    raise BrokerUnavailable("no RabbitMQ node answered: " + "; ".join(errors))


class KeptConnection:
    """One plain connection a long-lived process keeps for short operations (the console's
    dead-letter reads): opened at first use, opened again after it was lost (from the node
    after the one that went away, as :class:`FailoverConnection` does), closed on shutdown.

    Plain, not robust, on purpose: a robust connection reopens a lost channel by itself, and
    a dead-letter read holds unacked messages whose delivery tags belong to the old channel;
    nacking them on a reopened one would settle other messages. With a plain connection an
    operation that loses it fails (the broker requeues what it held) and the next one
    reconnects.
    """

    def __init__(self, url: str, *, name: str, connect_timeout_s: float = 10.0) -> None:
        self._url = url
        self._name = name
        self._timeout = connect_timeout_s
        self._connection: AbstractConnection | None = None
        self._index = -1
        self._lock = asyncio.Lock()
        self.opened = 0
        """How many connections were opened so far (the first and every reconnection)."""

    async def get(self) -> AbstractConnection:
        """The open connection, connecting first if there is none or it was lost."""
        async with self._lock:
            if self._connection is None or connection_lost(self._connection):
                if self._connection is not None:
                    log.info("broker_reconnecting", connection=self._name)
                    await _close_quietly(self._connection)
                self._connection, self._index = await connect_plain(
                    self._url, name=self._name, connect_timeout_s=self._timeout,
                    start=None if self._index < 0 else self._index + 1,
                )
                self.opened += 1
            return self._connection

    async def close(self) -> None:
        async with self._lock:
            connection, self._connection = self._connection, None
        if connection is not None:
            await _close_quietly(connection)


def connection_lost(connection: AbstractConnection) -> bool:
    """Closed, by us or by the broker or network (aio-pika's ``is_closed`` only tells the
    first: a connection the broker closed has only its ``connected`` event cleared)."""
    return connection.is_closed or not connection.connected.is_set()


async def _close_quietly(connection: AbstractConnection) -> None:
    if connection.is_closed:
        return
    try:  # also when lost: it releases what aio-pika still holds for it
        await connection.close()
    except CONNECT_ERRORS as exc:  # a lost connection may fail to close; it is gone anyway
        log.info("broker_close_failed", error=str(exc) or type(exc).__name__)


class FailoverConnection(RobustConnection):
    """A robust connection over several nodes: every reconnection tries the next node.

    aio-pika's robust connection retries the one URL it was given. Its connection factory
    opens each transport from ``self.url``; this subclass moves ``self.url`` to the next
    node whenever a transport attempt fails or an established connection is lost.
    """

    def __init__(self, nodes: list[str], start: int, **kwargs: Any) -> None:
        self._nodes = [URL(node) for node in nodes]
        self._index = start % len(nodes)
        super().__init__(self._nodes[self._index], **kwargs)

    def _advance(self) -> None:
        self._index = (self._index + 1) % len(self._nodes)
        self.url = self._nodes[self._index]

    async def _RobustConnection__connect_transport(self) -> None:  # noqa: N802 - aio-pika's name
        try:
            await RobustConnection._RobustConnection__connect_transport(self)  # type: ignore[attr-defined]
        except BaseException:
            self._advance()
            raise

    async def _on_connection_close(self, closing: asyncio.Future[Any]) -> None:
        # Only an established connection: a failed attempt has advanced already.
        if self.connected.is_set() and not self._close_called:
            self._advance()
        await super()._on_connection_close(closing)


async def connect(url: str, *, name: str) -> AbstractRobustConnection:
    """A robust connection: it reconnects (to the next node) and restores channels by itself.
    It starts at :func:`first_node`."""
    nodes = node_urls(url)
    errors: list[str] = []
    offset = first_node(len(nodes))
    for step in range(len(nodes)):
        start = (offset + step) % len(nodes)
        connection = FailoverConnection(
            nodes, start, client_properties={"connection_name": name},
            reconnect_interval=RECONNECT_INTERVAL_S,
        )
        try:
            await connection.connect()
        except CONNECT_ERRORS as exc:
            errors.append(f"{_hide_password(nodes[start])}: {exc or type(exc).__name__}")
            await connection.close()
            continue
        return connection
    raise BrokerUnavailable("no RabbitMQ node answered: " + "; ".join(errors))


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
