"""Reading and moving dead letters: the :class:`DeadLetterStore` port and its RabbitMQ adapter.

How reading stays harmless
--------------------------
AMQP has no "browse". :meth:`AmqpDeadLetterStore.browse` takes up to ``limit`` messages
with ``basic.get`` and manual ack on a channel of its own, keeps them all unacked (so
each is read once), then ``basic.nack(requeue=True)``s them one by one **in the order
they were read** before closing the channel. Measured on RabbitMQ 3.10: explicit in-order
nacks keep the queue order for classic and quorum queues, whereas merely closing the
channel lets a quorum queue return them in a different order. A reader killed mid-browse
still loses nothing (the broker requeues unacked messages), only the order may change.
A 3.10 quorum queue puts a message nacked *alone* at its back, so order is only kept
when the whole queue is held: ``DLQ_READ_LIMIT`` should stay above the deepest DLQ, and
:meth:`move` keeps reading (without selecting) past ``--max`` to the end of the queue.
Acks sent right before a channel close were seen to come back as requeued duplicates on
quorum queues; a final synchronous ``basic.get`` (:func:`_barrier`) orders them first.

Dead-letter queues are quorum queues (replicated), and before RabbitMQ 4.3 every requeue of
a quorum queue message counts as a delivery (``x-delivery-count`` grows by one per browse).
That is harmless only while no delivery limit applies to the queue: the topology declares
none and its ``ams-dead-letters`` policy outranks any that would set one
(:mod:`shared.topology`). :func:`delivery_limit_in_effect` checks it before every read (on
the queue listing of the same operation if at most :data:`LISTING_FRESH_S` old) and refuses
to touch a queue with a limit (on 4.x, the default of 20 counts unless the policy says -1):
reading must never dead-letter or drop a dead letter. A replay strips
``x-delivery-count`` so the work queue starts its own count afresh.

How moving stays lossless
-------------------------
:meth:`AmqpDeadLetterStore.move` takes messages with manual ack, and per window of
``window`` selected messages publishes each to the ``replay`` exchange with routing key =
the queue it failed in (``mandatory``, publisher confirms), then acks the dead letter only
after its confirm. A crash at any instant leaves every message in the dead-letter queue
(unacked -> requeued), in the work queue, or in both (a duplicate the consumer's inbox
absorbs). Messages not selected, or whose publish failed, are nacked back in order at the
end. A purge is the same loop without the publish.

Where a replay may go
---------------------
The target is the ``x-ams-failed-queue`` header: the message's word, not the operator's. It
must be a work queue of the topology (:attr:`shared.topology.Topology.replay_targets`, for
the configured partitions) and of the letter's own consumer (:func:`replay_refusal`);
anything else is refused for that message, which stays. The broker enforces the same: the
replay exchange is bound to the topology's work queues only, and the operator's user may
publish to that exchange and nowhere else (``OPERATOR_PERMISSIONS``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import aio_pika
import aiormq.exceptions
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from amsctl.dlq.model import (
    DELIVERY_COUNT,
    DeadLetter,
    is_dlq_name,
    parse_dead_letter,
    replay_refusal,
    work_queue_of,
)
from shared import messaging as m
from shared import topology
from shared.broker import connect_plain
from shared.config import Settings
from shared.errors import Conflict, DependencyUnavailable, NotFound
from shared.rabbitmq_admin import ManagementClient
from shared.topology_apply import vhost_of

CONNECT_TIMEOUT_S = 10.0
GET_TIMEOUT_S = 10.0
CONFIRM_TIMEOUT_S = 30.0
LISTING_FRESH_S = 2.0
"""How long a queue listing stands in for a fresh look at a queue's delivery limit: long
enough for one console page (list, then read each queue), short enough that a policy
changed since is seen by the next page; a CLI replay of many queues looks again."""


@dataclass(frozen=True)
class QueueInfo:
    """A dead-letter queue and its depth as the management API reports it."""

    name: str
    messages: int
    unacked: int
    work_queue: str


@dataclass(frozen=True)
class Outcome:
    """What happened to one dead letter during a replay or purge."""

    message_id: str
    queue: str
    target: str | None
    ok: bool
    error: str | None = None
    type: str = ""
    error_type: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"message_id": self.message_id, "queue": self.queue, "target": self.target,
                "type": self.type, "error_type": self.error_type,
                "outcome": "ok" if self.ok else "failed", "error": self.error}


@dataclass(frozen=True)
class MovePlan:
    """What :meth:`DeadLetterStore.move` should do with one dead-letter queue."""

    select: Callable[[DeadLetter], bool]
    replay_stamp: dict[str, Any] | None
    """The entry appended to ``x-ams-replays``; ``None`` means purge (remove, publish nothing)."""
    max_count: int | None = None
    window: int = 100


class DeadLetterStore(Protocol):
    """Where dead letters live; the CLI only talks to this port."""

    def dead_letter_queues(self) -> list[QueueInfo]: ...

    async def browse(self, queue: str, *, limit: int) -> list[DeadLetter]: ...

    async def move(
        self, queue: str, plan: MovePlan, on_window: Callable[[list[Outcome]], None]
    ) -> list[Outcome]: ...


QUORUM_DEFAULT_DELIVERY_LIMIT_4X = 20


def delivery_limit_in_effect(info: Mapping[str, Any], broker_major: int) -> int | None:
    """The delivery limit a queue (management API view) counts requeues against, or None.

    Only quorum queues have one. The argument and the policy both count (the broker takes
    the smaller); RabbitMQ 4.x applies 20 when neither says otherwise, and -1 means none.
    """
    if info.get("type") != "quorum":
        return None
    argument = (info.get("arguments") or {}).get("x-delivery-limit")
    policy = (info.get("effective_policy_definition") or {}).get("delivery-limit")
    stated = [v for v in (argument, policy) if isinstance(v, int)]
    limits = [v for v in stated if v >= 0]
    if limits:
        return min(limits)
    if broker_major >= 4 and not stated:
        return QUORUM_DEFAULT_DELIVERY_LIMIT_4X
    return None


def replay_headers(headers: Mapping[str, Any], stamp: dict[str, Any]) -> dict[str, Any]:
    """Headers of a replayed message: fresh retry budget, one more replay-history entry."""
    out = {k: v for k, v in headers.items() if k != DELIVERY_COUNT}
    history = out.get(m.H_REPLAYS)
    out[m.H_REPLAYS] = [*(history if isinstance(history, list) else []), stamp]
    out[m.H_ATTEMPTS] = 0
    return out


@dataclass
class _Taken:
    message: AbstractIncomingMessage
    letter: DeadLetter


@dataclass
class _Cursor:
    depth: int
    read: int = 0
    selected: int = 0
    held: list[_Taken] = field(default_factory=list)


class AmqpDeadLetterStore:
    """The real adapter: AMQP for messages, the management API to list queues."""

    def __init__(self, settings: Settings, *, connection: AbstractConnection | None = None
                 ) -> None:
        """``connection``: one the caller keeps open across operations (the console's
        :class:`shared.broker.KeptConnection`); used, never closed. Without it the store
        connects on entry and closes on exit (the CLI)."""
        self._settings = settings.broker
        self._vhost = vhost_of(settings.broker.url)
        self._connection: AbstractConnection | None = connection
        self._own_connection = connection is None
        self._mgmt: ManagementClient | None = None
        self._listed: dict[str, dict[str, Any]] = {}
        self._listed_at = -LISTING_FRESH_S
        self._broker_major: int | None = None
        self.depths: dict[str, int] = {}
        """Each queue's depth as the last :meth:`browse` of it saw it: AMQP's own count at
        that moment, where the management API's figure lags by up to its sampling interval."""
        delays = topology.parse_retry_delays(settings.worker.retry_delays)
        self._targets = topology.deployed(delays, settings.worker.partitions).replay_targets

    async def __aenter__(self) -> AmqpDeadLetterStore:
        if not self._own_connection:
            return self
        try:
            self._connection, _ = await connect_plain(
                self._settings.url, name="amsctl dlq", connect_timeout_s=CONNECT_TIMEOUT_S
            )
        except (OSError, aiormq.exceptions.AMQPError, TimeoutError) as exc:
            detail = str(exc) or type(exc).__name__
            raise DependencyUnavailable(f"RabbitMQ is unreachable: {detail}") from exc
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._mgmt is not None:
            self._mgmt.close()
        if self._own_connection and self._connection is not None:
            await self._connection.close()

    def _management(self) -> ManagementClient:
        if self._mgmt is None:
            self._mgmt = ManagementClient(self._settings.management_url)
        return self._mgmt

    def dead_letter_queues(self) -> list[QueueInfo]:
        queues = self._management().queues(self._vhost, totals_only=True)
        self._listed = {q["name"]: q for q in queues if is_dlq_name(q["name"])}
        self._listed_at = time.monotonic()
        return sorted(
            (
                QueueInfo(name, int(q.get("messages_ready", 0) or 0),
                          int(q.get("messages_unacknowledged", 0) or 0), work_queue_of(name))
                for name, q in self._listed.items()
            ),
            key=lambda q: q.name,
        )

    async def _check_readable(self, queue: str) -> None:
        """Refuse a queue with a delivery limit in effect (see the module docstring). The
        queue's arguments and policy come from :meth:`dead_letter_queues` if it listed them
        less than :data:`LISTING_FRESH_S` ago (one management call per console page, not
        two per queue), else from the management API now."""
        fresh = time.monotonic() - self._listed_at < LISTING_FRESH_S
        info = self._listed.get(queue) if fresh else None
        if info is None:
            info = await asyncio.to_thread(self._management().queue, self._vhost, queue)
        limit = delivery_limit_in_effect(info, await self._major_version())
        if limit is not None:
            raise Conflict(
                f"{queue} has a delivery limit of {limit} in effect: reading it would count "
                "toward the limit and could drop dead letters. Run `amsctl topology apply` "
                "(its ams-dead-letters policy lifts the limit) and check no policy of a "
                "higher priority matches the queue."
            )

    async def _major_version(self) -> int:
        """The broker's major version: from the AMQP connection's server properties (no
        round trip), else from the management API once per store."""
        if self._broker_major is None:
            version = _server_version(self._connection)
            if version is None:
                overview = await asyncio.to_thread(self._management().overview)
                version = str(overview.get("rabbitmq_version", "3"))
            self._broker_major = int(version.split(".", 1)[0] or 3)
        return self._broker_major

    async def browse(self, queue: str, *, limit: int) -> list[DeadLetter]:
        await self._check_readable(queue)
        channel = await self._channel(confirms=False)
        held: list[_Taken] = []
        try:
            amqp_queue = await self._passive(channel, queue)
            depth = int(amqp_queue.declaration_result.message_count or 0)
            self.depths[queue] = depth
            while len(held) < min(depth, limit):
                taken = await self._get(amqp_queue, queue, len(held))
                if taken is None:
                    break
                held.append(taken)
        finally:
            await _give_back(channel, held)
        return [t.letter for t in held]

    async def move(
        self, queue: str, plan: MovePlan, on_window: Callable[[list[Outcome]], None]
    ) -> list[Outcome]:
        await self._check_readable(queue)
        channel = await self._channel(confirms=True)
        outcomes: list[Outcome] = []
        cursor = _Cursor(depth=0)
        try:
            exchange = None if plan.replay_stamp is None else await self._replay_exchange(channel)
            amqp_queue = await self._passive(channel, queue)
            cursor.depth = int(amqp_queue.declaration_result.message_count or 0)
            while cursor.read < cursor.depth:
                batch = await self._next_window(amqp_queue, queue, plan, cursor)
                if not batch:
                    continue
                window = await self._settle(exchange, batch, plan, cursor)
                outcomes.extend(window)
                on_window(window)
            await _barrier(amqp_queue, queue, cursor)
        finally:
            await _give_back(channel, cursor.held)
        return outcomes

    async def _next_window(
        self, amqp_queue: aio_pika.abc.AbstractQueue, queue: str, plan: MovePlan, cursor: _Cursor
    ) -> list[_Taken]:
        batch: list[_Taken] = []
        while len(batch) < plan.window and cursor.read < cursor.depth:
            taken = await self._get(amqp_queue, queue, cursor.read)
            if taken is None:
                cursor.read = cursor.depth
                break
            cursor.read += 1
            # Past --max the rest is still read and held: a quorum queue puts a message
            # nacked alone at its back, so only holding everything to the end keeps order.
            room = plan.max_count is None or cursor.selected < plan.max_count
            if room and plan.select(taken.letter):
                cursor.selected += 1
                batch.append(taken)
            else:
                cursor.held.append(taken)
        return batch

    async def _settle(
        self, exchange: aio_pika.abc.AbstractExchange | None, batch: list[_Taken],
        plan: MovePlan, cursor: _Cursor,
    ) -> list[Outcome]:
        if plan.replay_stamp is None or exchange is None:
            errors: list[BaseException | None] = [None] * len(batch)
        else:
            stamp = plan.replay_stamp
            errors = list(await asyncio.gather(
                *(self._publish(exchange, t, stamp) for t in batch), return_exceptions=True
            ))
        window = []
        for taken, error in zip(batch, errors, strict=True):
            letter = taken.letter
            target = None if plan.replay_stamp is None else letter.failed_queue
            if error is None:
                await taken.message.ack()
            else:
                cursor.held.append(taken)
            window.append(Outcome(
                letter.message_id, letter.queue, target, error is None,
                None if error is None else _describe(error), letter.type, letter.error_type,
            ))
        return window

    async def _publish(
        self, exchange: aio_pika.abc.AbstractExchange, taken: _Taken, stamp: dict[str, Any]
    ) -> None:
        source, target = taken.message, taken.letter.failed_queue
        refusal = replay_refusal(taken.letter.queue, target, self._targets)
        if refusal is not None:
            raise ValueError(refusal)
        message = aio_pika.Message(
            source.body,
            headers=replay_headers(source.headers or {}, stamp),
            content_type=source.content_type, content_encoding=source.content_encoding,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT, priority=source.priority,
            correlation_id=source.correlation_id, reply_to=source.reply_to,
            message_id=source.message_id, timestamp=source.timestamp, type=source.type,
            app_id=source.app_id,
        )
        await exchange.publish(
            message, routing_key=target, mandatory=True, timeout=CONFIRM_TIMEOUT_S
        )

    @staticmethod
    async def _replay_exchange(channel: AbstractChannel) -> aio_pika.abc.AbstractExchange:
        """The replay exchange (a passive declare, needing no configure permission)."""
        try:
            return await channel.get_exchange(m.REPLAY_EXCHANGE, ensure=True)
        except aiormq.exceptions.ChannelNotFoundEntity as exc:
            raise NotFound(
                f"the {m.REPLAY_EXCHANGE!r} exchange does not exist: run `amsctl topology apply`"
            ) from exc

    async def _channel(self, *, confirms: bool) -> AbstractChannel:
        assert self._connection is not None, "use AmqpDeadLetterStore as an async context manager"
        return await self._connection.channel(
            publisher_confirms=confirms, on_return_raises=confirms
        )

    @staticmethod
    async def _passive(channel: AbstractChannel, queue: str) -> aio_pika.abc.AbstractQueue:
        try:
            return await channel.get_queue(queue, ensure=True)
        except aiormq.exceptions.ChannelNotFoundEntity as exc:
            raise NotFound(f"queue {queue!r} does not exist") from exc

    @staticmethod
    async def _get(
        amqp_queue: aio_pika.abc.AbstractQueue, queue: str, position: int
    ) -> _Taken | None:
        message = await amqp_queue.get(no_ack=False, fail=False, timeout=GET_TIMEOUT_S)
        if message is None:
            return None
        props = {
            "message_id": message.message_id, "type": message.type,
            "content_type": message.content_type, "correlation_id": message.correlation_id,
            "timestamp": message.timestamp, "app_id": message.app_id,
            "delivery_mode": int(message.delivery_mode) if message.delivery_mode else None,
            "routing_key": message.routing_key, "redelivered": message.redelivered,
        }
        letter = parse_dead_letter(queue, position, message.headers or {}, message.body, props)
        return _Taken(message, letter)


async def _barrier(amqp_queue: aio_pika.abc.AbstractQueue, queue: str, cursor: _Cursor) -> None:
    """One synchronous ``basic.get`` after the last acks, before the channel closes.

    Acks are asynchronous; on RabbitMQ 3.10 quorum queues we saw acks sent just before a
    channel close come back as requeued messages (a duplicate, never a loss). A get is a
    synchronous command that the queue orders after the acks sent before it.
    """
    taken = await AmqpDeadLetterStore._get(amqp_queue, queue, cursor.read)
    if taken is not None:
        cursor.held.append(taken)


async def _give_back(channel: AbstractChannel, held: list[_Taken]) -> None:
    """Requeue in the original order (see module docstring), then close the channel."""
    try:
        if not channel.is_closed:
            for taken in sorted(held, key=lambda t: t.letter.position):
                await taken.message.nack(requeue=True)
    finally:
        if not channel.is_closed:
            await channel.close()


def _server_version(connection: AbstractConnection | None) -> str | None:
    """The broker version the AMQP handshake announced, if the connection kept it."""
    transport = getattr(connection, "transport", None)  # aio-pika's; aiormq's connection in it
    properties = getattr(getattr(transport, "connection", None), "server_properties", None)
    version = properties.get("version") if isinstance(properties, Mapping) else None
    if isinstance(version, bytes):
        return version.decode()
    return version if isinstance(version, str) else None


def _describe(error: BaseException) -> str:
    if isinstance(error, aiormq.exceptions.PublishError):
        return f"not routed (queue missing?): {error}"
    return f"{type(error).__name__}: {error}"
