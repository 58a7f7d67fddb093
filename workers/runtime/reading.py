"""Reading a delivery: the context a handler gets, its payload, and which handler it goes to.

Nothing here does I/O. A message that cannot be read (no message id, a body over the
limit, an event type the consumer does not handle, a bad schema version or payload)
raises :class:`InvalidMessage`, so the processor dead-letters it alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Executor
from typing import Any

from shared import messaging as m
from shared.errors import InvalidMessage
from shared.events import Message, decode
from shared.tracing import TraceHeaders
from workers.runtime.amqp import InboundMessage
from workers.runtime.context import MessageContext
from workers.runtime.failures import attempts_of
from workers.runtime.sessions import Handler

MAX_BODY_BYTES = 1024 * 1024
"""Largest message body a consumer decodes (events are small; a larger one is dead-lettered)."""


class Reader:
    """Reads the deliveries of one consumer (``consumer``) for its ``handlers``."""

    def __init__(
        self,
        consumer: str,
        handlers: Mapping[str, tuple[type[Message], Handler]],
        *,
        executor: Executor | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self._consumer = consumer
        self._handlers = handlers
        self._executor = executor
        self._max_body_bytes = max_body_bytes

    def context(
        self, message: InboundMessage, headers: dict[str, Any], trace: TraceHeaders | None = None
    ) -> MessageContext:
        """The message's context; ``trace``: the one its follow-ups carry (in a batch)."""
        message_id = message.message_id or ""
        correlation = message.correlation_id or headers.get(m.H_CORRELATION_ID) or message_id
        aggregate = headers.get(m.H_AGGREGATE_ID)
        causation = headers.get(m.H_CAUSATION_ID)
        return MessageContext(
            message_id=message_id,
            event_type=message.type or "",
            correlation_id=str(correlation) if correlation else None,
            causation_id=str(causation) if causation else None,
            headers=headers,
            redelivered=bool(message.redelivered),
            attempts=attempts_of(headers),
            consumer=self._consumer,
            routing_key=message.routing_key or "",
            aggregate_id=str(aggregate) if aggregate is not None else None,
            executor=self._executor,
            trace=trace,
        )

    def safe_context(
        self, message: InboundMessage, headers: dict[str, Any]
    ) -> tuple[MessageContext, InvalidMessage | None]:
        """The message's context; for headers it cannot be built from, a bare one and the
        reason, so the message is dead-lettered alone instead of wedging its delivery."""
        try:
            return self.context(message, headers), None
        except Exception as exc:
            bare = MessageContext(
                message_id=str(message.message_id or ""), event_type=str(message.type or ""),
                correlation_id=None, causation_id=None, headers={}, redelivered=False,
                attempts=0, consumer=self._consumer, executor=self._executor,
            )
            return bare, InvalidMessage(f"unreadable message headers: {type(exc).__name__}")

    def decode(
        self, message: InboundMessage, headers: dict[str, Any], ctx: MessageContext
    ) -> tuple[Message, Handler]:
        """The payload and its handler; :class:`InvalidMessage` for what cannot be handled."""
        if not ctx.message_id:
            raise InvalidMessage("message has no message_id; it cannot be processed idempotently")
        if len(message.body) > self._max_body_bytes:
            raise InvalidMessage(
                f"message body of {len(message.body)} bytes is over the limit of "
                f"{self._max_body_bytes} (WORKER_MAX_MESSAGE_BYTES)"
            )
        entry = self._handlers.get(ctx.event_type)
        if entry is None:
            raise InvalidMessage(
                f"consumer {self._consumer!r} has no handler for {ctx.event_type!r}"
            )
        raw_version = headers.get(m.H_SCHEMA_VERSION, 1)
        try:
            version = int(raw_version)
        except (TypeError, ValueError):
            raise InvalidMessage(f"invalid schema version {raw_version!r}") from None
        payload = decode(ctx.event_type, version, message.body)
        if not isinstance(payload, entry[0]):
            raise InvalidMessage(f"{ctx.event_type} v{version} is not a {entry[0].__name__}")
        return payload, entry[1]
