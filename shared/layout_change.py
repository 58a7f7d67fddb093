"""Retire what the other partition layout of a consumer left bound to ``events``.

``WORKER_PARTITIONS`` decides whether a consumer has one work queue (``NAME``) or N
partition queues behind ``NAME.partitions``. A broker that was set up for the other layout
(an earlier deployment, or compose's boot-time ``definitions.json``, generated for one
partition) still routes a copy of every event to it: a queue no one reads grows forever.
``amsctl topology apply`` therefore unbinds the other layout from ``events`` (no new
copies) and from the ``replay`` exchange first, then deletes its queues that are empty; a
queue still holding messages is kept and named in the summary for the operator to drain
(docs/operations.md, "Changing N").
"""

from __future__ import annotations

from aio_pika.abc import AbstractChannel, AbstractConnection
from aiormq.exceptions import ChannelNotFoundEntity

from shared import topology
from shared.messaging import EVENTS_EXCHANGE, REPLAY_EXCHANGE


async def retire_other_layout(
    connection: AbstractConnection, specs: tuple[topology.ConsumerSpec, ...],
    delays: tuple[topology.RetryDelay, ...], queues: set[str], exchanges: set[str],
) -> list[str]:
    """Unbind and (when empty) delete the other layout; returns the queues kept with messages."""
    kept: list[str] = []
    channel = await connection.channel()
    try:
        for spec in specs:
            if not spec.partitionable:
                continue
            if spec.partitioned and spec.name in queues:
                single = spec.with_partitions(1)
                queue = await channel.get_queue(spec.name, ensure=False)
                for key in spec.routing_keys:
                    await queue.unbind(EVENTS_EXCHANGE, routing_key=key)
                if REPLAY_EXCHANGE in exchanges:
                    await queue.unbind(REPLAY_EXCHANGE, routing_key=spec.name)
                old = [single.queue_name, *(single.retry_queue_name(d) for d in delays)]
                kept += await _delete_empty(channel, [q for q in old if q in queues])
            elif not spec.partitioned and spec.exchange_name in exchanges:
                exchange = await channel.get_exchange(spec.exchange_name, ensure=False)
                for key in spec.routing_keys:
                    await exchange.unbind(EVENTS_EXCHANGE, routing_key=key)
                await channel.exchange_delete(spec.exchange_name)
                await channel.exchange_delete(spec.unslotted_exchange_name)
                old = sorted(q for q in queues if _is_partition_queue(spec.name, q))
                if REPLAY_EXCHANGE in exchanges:
                    for name in (q for q in old if q.rsplit(".p", 1)[-1].isdigit()):
                        partition = await channel.get_queue(name, ensure=False)
                        await partition.unbind(REPLAY_EXCHANGE, routing_key=name)
                kept += await _delete_empty(channel, old)
    finally:
        if not channel.is_closed:
            await channel.close()
    return kept


def _is_partition_queue(consumer: str, queue: str) -> bool:
    head, _, rest = queue.partition(".p")
    return head == consumer and rest.split(".", 1)[0].isdigit()


async def _delete_empty(channel: AbstractChannel, names: list[str]) -> list[str]:
    kept = []
    for name in names:
        try:
            declared = await channel.declare_queue(name, passive=True)
        except ChannelNotFoundEntity:
            await channel.reopen()
            continue
        if declared.declaration_result.message_count:
            kept.append(f"{name} ({declared.declaration_result.message_count} message(s))")
        else:
            # Quorum queues refuse delete-if-empty; nothing routes here any more.
            await channel.queue_delete(name)
    return kept
