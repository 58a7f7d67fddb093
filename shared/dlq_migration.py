"""Move classic dead-letter queues to quorum queues without losing a message.

A queue's type cannot change in place. For each ``<consumer>.dlq`` that exists as a classic
queue, :func:`migrate_dead_letter_queues`:

1. declares ``<consumer>.dlq.migrating`` (quorum) and moves every message there: get, publish
   (default exchange, ``mandatory``, publisher confirm), then ack the original;
2. deletes the classic queue only if it is empty (a dead letter that arrived meanwhile
   makes the delete fail: step 1 runs again);
3. declares the quorum ``<consumer>.dlq`` and moves the messages back, in order, the same
   way; then deletes the holding queue if it is empty.

A crash at any instant leaves every message in one of the queues (unacked messages return
to their queue), at worst in two (published, not yet acked: a duplicate, which a replay's
inbox absorbs). Running it again resumes: a holding queue left behind is emptied into the
dead-letter queue. While the dead-letter queue is briefly missing, a worker's dead-lettering
publish comes back unroutable and the worker requeues the message (it retries); the broker's
own dead-lettering is at-least-once and retries too. Best run with the workers stopped: on
3.10 a channel that published to the classic queue is closed by the broker when it next
publishes to the quorum queue of the same name (the worker reconnects and retries).
"""

from __future__ import annotations

from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage
from aiormq.exceptions import ChannelNotFoundEntity, ChannelPreconditionFailed

from shared.logging import get_logger
from shared.topology import Queue

log = get_logger(__name__)

HOLDING_SUFFIX = ".migrating"
GET_TIMEOUT_S = 10.0
MAX_ROUNDS = 20


def holding_queue(dlq: str) -> str:
    return dlq + HOLDING_SUFFIX


async def migrate_dead_letter_queues(
    connection: AbstractConnection, queues: list[Queue], types: dict[str, str]
) -> dict[str, int]:
    """Migrate every queue of ``queues`` that ``types`` (name -> type) says is classic, and
    finish any migration a crash interrupted. Returns messages moved per dead-letter queue."""
    moved: dict[str, int] = {}
    for queue in queues:
        classic = types.get(queue.name) == "classic"
        interrupted = holding_queue(queue.name) in types
        if classic or interrupted:
            moved[queue.name] = await _migrate(connection, queue, classic=classic)
    return moved


async def _migrate(connection: AbstractConnection, queue: Queue, *, classic: bool) -> int:
    holding = holding_queue(queue.name)
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    try:
        await channel.declare_queue(holding, durable=True, arguments=queue.arguments)
        if classic:
            for _ in range(MAX_ROUNDS):
                await _move_all(channel, queue.name, holding)
                if await _delete_if_empty(channel, queue.name):
                    break
                channel = await _reopened(connection, channel)
            else:
                raise RuntimeError(f"{queue.name} kept receiving messages; migrate it later")
            # RabbitMQ 3.10 crashes a channel that published to the classic queue and then
            # publishes to the quorum queue of the same name (its cached queue state): a
            # fresh channel for the second half. Workers' channels hit the same once; they
            # reconnect, and the message they were dead-lettering is retried.
            channel = await _reopened(connection, channel)
        await channel.declare_queue(queue.name, durable=True, arguments=queue.arguments)
        count = await _move_all(channel, holding, queue.name)
        # Only this code publishes to the holding queue, and quorum queues refuse
        # delete-if-empty (3.10): count, then delete.
        left = await channel.declare_queue(holding, passive=True)
        if left.declaration_result.message_count:
            raise RuntimeError(f"{holding} is not empty after the move; run apply again")
        await channel.queue_delete(holding)
        log.info("dead_letter_queue_migrated", queue=queue.name, messages=count)
        return count
    finally:
        if not channel.is_closed:
            await channel.close()


async def _move_all(channel: AbstractChannel, source: str, target: str) -> int:
    """Every message of ``source`` to ``target``, in order; each acked after its confirm."""
    queue = await channel.get_queue(source, ensure=True)
    moved = 0
    while True:
        message = await queue.get(no_ack=False, fail=False, timeout=GET_TIMEOUT_S)
        if message is None:
            return moved
        await channel.default_exchange.publish(_copy(message), routing_key=target, mandatory=True)
        await message.ack()
        moved += 1


def _copy(message: AbstractIncomingMessage) -> aio_pika.Message:
    headers: dict[str, Any] = {
        k: v for k, v in (message.headers or {}).items() if k != "x-delivery-count"
    }
    return aio_pika.Message(
        message.body, headers=headers, content_type=message.content_type,
        content_encoding=message.content_encoding, delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        priority=message.priority, correlation_id=message.correlation_id,
        reply_to=message.reply_to, expiration=None, message_id=message.message_id,
        timestamp=message.timestamp, type=message.type, user_id=None, app_id=message.app_id,
    )


async def _delete_if_empty(channel: AbstractChannel, name: str) -> bool:
    try:
        await channel.queue_delete(name, if_unused=False, if_empty=True)
    except ChannelPreconditionFailed:
        return False
    except ChannelNotFoundEntity:
        return True
    return True


async def _reopened(connection: AbstractConnection, channel: AbstractChannel) -> AbstractChannel:
    if not channel.is_closed:
        await channel.close()
    return await connection.channel(publisher_confirms=True, on_return_raises=True)
