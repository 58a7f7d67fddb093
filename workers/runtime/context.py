"""What a handler knows about the message it handles, and the helpers it may use."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from outbox.writer import add_event
from shared.events import Message
from shared.messaging import H_CAUSATION_ID

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

    def follow_up_headers(self) -> dict[str, str]:
        """Headers for events this handler emits: they were caused by this message."""
        return {H_CAUSATION_ID: self.message_id}

    async def emit(self, session: AsyncSession, event: Message) -> uuid.UUID:
        """Add a follow-up event to this database's outbox, in the handler's transaction.

        The correlation id and the causation (the incoming message id) are this message's,
        passed explicitly.
        """
        return await add_event(
            session, event, correlation_id=self.correlation_id,
            headers=self.follow_up_headers(),
        )

    async def run_blocking(self, func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run blocking or CPU-heavy ``func`` in the worker's thread pool, off the event loop.

        The loop keeps serving AMQP heartbeats and the other messages meanwhile.
        """
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, partial(func, *args, **kwargs))
