"""What a handler knows about the message it handles, and the helpers it may use."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from outbox.writer import Emit, Emitter, add_events
from shared import correlation
from shared.events import Message
from shared.tracing import TraceHeaders

T = TypeVar("T")


@dataclass(frozen=True)
class MessageContext:
    """Metadata of one delivery. ``attempts`` counts the failed attempts before this one."""

    message_id: str
    event_type: str
    correlation_id: str | None
    causation_id: str | None
    headers: Mapping[str, Any]
    redelivered: bool
    attempts: int
    consumer: str
    routing_key: str = ""
    aggregate_id: str | None = None
    executor: Executor | None = field(default=None, repr=False, compare=False)
    trace: TraceHeaders | None = field(default=None, repr=False, compare=False)
    """The trace context this message's follow-up events carry, when it is handled without
    a span of its own (in a batch: its own trace); None: the current span's."""

    @property
    def emitter(self) -> Emitter:
        """Emits the events this message causes: its correlation id, its id as causation."""
        return Emitter(self.correlation_id, self.message_id, self.trace)

    @property
    def log_keys(self) -> dict[str, str | None]:
        """What the runtime binds to the log lines of a message handled alone, for a batch
        handler to put on its lines about this message: ``log.info("x", **ctx.log_keys)``."""
        keys = {
            "message_id": self.message_id, "event_type": self.event_type,
            "correlation_id": self.correlation_id,
        }
        if self.trace is not None:
            keys["trace_id"] = self.trace[0].split("-")[1]
        return keys

    async def emit(self, session: AsyncSession, event: Message) -> uuid.UUID:
        """Add a follow-up event to this database's outbox, in the handler's transaction.

        The correlation id and the causation (the incoming message id) are this message's,
        passed explicitly (:attr:`emitter`). An :class:`outbox.Emit` itself: hand ``ctx.emit``
        to code that emits on the handler's behalf (the saga store's commands).
        """
        return await self.emitter(session, event)

    async def run_blocking(self, func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run blocking or CPU-heavy ``func`` in the worker's thread pool, off the event loop.

        The loop keeps serving AMQP heartbeats and the other messages meanwhile.
        """
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, partial(func, *args, **kwargs))


async def emit_each(
    session: AsyncSession, events: Iterable[tuple[MessageContext, Message]]
) -> list[uuid.UUID]:
    """Add the follow-up events of several messages (a batch handler's) in one statement,
    each with its own message's correlation, causation and trace context."""
    return await add_events(session, [(event, ctx.emitter) for ctx, event in events])


def unprompted() -> Emitter:
    """The emitter of work that no message caused (a timer, a sweep): a correlation id of its
    own, which later events of the chain carry on, and no causation."""
    return Emitter(correlation.new())


__all__ = ["Emit", "Emitter", "MessageContext", "emit_each", "unprompted"]
