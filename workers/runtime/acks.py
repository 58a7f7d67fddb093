"""The bulk-ack tracker: one ``basic.ack(multiple)`` per run of finished deliveries."""

from __future__ import annotations

import asyncio
from collections import deque

from aiormq.exceptions import AMQPError, ChannelInvalidStateError

from shared.logging import get_logger
from workers.runtime.amqp import InboundMessage

log = get_logger(__name__)

REQUEUE_PAUSE_S = 1.0
"""Pause before handing a message back when even the failure path (publishing) failed."""

ACK_FLUSH_S = 0.05
"""Longest a finished message waits for a bulk ack before it is acked on its own."""

_IN_FLIGHT, _READY, _SETTLED = 0, 1, 2


class Acks:
    """Acks finished deliveries in bulk: one ``basic.ack(multiple)`` per run of them.

    ``multiple`` acks every delivery up to that tag on the channel, so a bulk ack is sent
    only for a prefix of the deliveries (in arrival order) that are all finished: acked
    here, or settled on their own (a retry, a dead letter, a requeue). A finished message
    stuck behind one still running is acked on its own after ``flush_s``, so a slow
    message holds no prefetch slots. Deliveries of a channel that closed are forgotten:
    the broker hands them out again anyway.
    """

    def __init__(self, flush_s: float = ACK_FLUSH_S) -> None:
        self._flush_s = flush_s
        self._channel: object | None = None
        self._order: deque[int] = deque()
        self._state: dict[int, int] = {}
        self._ready: dict[int, InboundMessage] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._sending = asyncio.Lock()
        self._flushes: set[asyncio.Task[None]] = set()

    def track(self, message: InboundMessage) -> None:
        """Record a delivery as it arrives (deliveries arrive in delivery-tag order)."""
        channel = _channel_of(message)
        if channel is not self._channel:
            self._channel = channel
            self._order.clear()
            self._state.clear()
            self._ready.clear()
        tag = message.delivery_tag
        if tag is not None:
            self._order.append(tag)
            self._state[tag] = _IN_FLIGHT

    async def ack(self, messages: list[InboundMessage]) -> None:
        """The effects of ``messages`` committed: ack them, in bulk where order allows."""
        for message in messages:
            tag = message.delivery_tag
            if not self._tracked(message):
                await ack(message)
                continue
            assert tag is not None
            self._state[tag] = _READY
            self._ready[tag] = message
        await self._advance()

    def settled(self, message: InboundMessage) -> None:
        """``message`` was acked or nacked on its own."""
        if self._tracked(message):
            assert message.delivery_tag is not None
            self._state[message.delivery_tag] = _SETTLED

    async def flush(self) -> None:
        """Ack every finished message now, on its own if need be (before shutdown)."""
        await self._advance()
        async with self._sending:
            ready = list(self._ready.values())
            self._ready.clear()
            for message in ready:
                assert message.delivery_tag is not None
                self._state[message.delivery_tag] = _SETTLED
                await ack(message)
        await self._advance()

    def _tracked(self, message: InboundMessage) -> bool:
        tag = message.delivery_tag
        return (
            tag is not None and tag in self._state
            and _channel_of(message) is self._channel
        )

    async def _advance(self) -> None:
        # One sender at a time: a lone ack must reach the broker before any bulk ack
        # that covers its tag (an ack of a tag no longer unacked closes the channel).
        async with self._sending:
            last: InboundMessage | None = None
            while self._order and self._state[self._order[0]] != _IN_FLIGHT:
                tag = self._order.popleft()
                if self._state.pop(tag) == _READY:
                    last = self._ready.pop(tag)
            if last is not None:
                await ack(last, multiple=True)
        if self._ready and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._flush_s, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        task = asyncio.create_task(self.flush())
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)


def _channel_of(message: InboundMessage) -> object | None:
    try:
        return message.channel
    except ChannelInvalidStateError:
        return None


async def ack(message: InboundMessage, *, multiple: bool = False) -> None:
    try:
        await message.ack(multiple=multiple)
    except (ChannelInvalidStateError, AMQPError, ConnectionError) as exc:
        # The channel died after the commit: the broker redelivers, the inbox drops it.
        log.warning("ack_lost", error=repr(exc))


async def requeue(message: InboundMessage) -> None:
    await asyncio.sleep(REQUEUE_PAUSE_S)
    try:
        await message.nack(requeue=True)
    except (ChannelInvalidStateError, AMQPError, ConnectionError) as exc:
        log.warning("nack_lost", error=repr(exc))
