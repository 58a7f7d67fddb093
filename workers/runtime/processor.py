"""One delivery, start to finish: decode, apply with the inbox row, commit, then ack.

Or, when the handler fails: publish a copy to a retry queue or the dead-letter queue
(publisher confirms) and only then ack the original. A crash at any point leaves the
message unacked, so the broker delivers it again and the inbox recognises what was
already applied.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from concurrent.futures import Executor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared import messaging as m
from shared import tracing
from shared.correlation import correlated
from shared.errors import InvalidMessage
from shared.events import Message, decode
from shared.logging import bound, get_logger
from shared.topology import ConsumerSpec, RetryDelay
from workers.runtime import acks, inbox, metrics
from workers.runtime.acks import Acks
from workers.runtime.amqp import InboundMessage
from workers.runtime.context import MessageContext
from workers.runtime.failures import Failure, Outcome, attempts_of, classify, failure_headers
from workers.runtime.sessions import Handler, end_transaction

log = get_logger(__name__)


@dataclass(frozen=True)
class _Prepared:
    message: InboundMessage
    ctx: MessageContext
    payload: Message
    handler: Handler


@dataclass(frozen=True)
class RetryPolicy:
    """How failures are retried: attempts in total, and the delay before each retry."""

    max_attempts: int
    delays: tuple[RetryDelay, ...]

    def delay_for(self, attempts: int) -> RetryDelay:
        return self.delays[min(attempts, len(self.delays)) - 1]


MAX_BODY_BYTES = 1024 * 1024
"""Largest message body a consumer decodes (events are small; a larger one is dead-lettered)."""


class Processor:
    """Handles single deliveries for one consumer; safe to run many concurrently."""

    def __init__(
        self,
        spec: ConsumerSpec,
        handlers: Mapping[str, tuple[type[Message], Handler]],
        sessions: async_sessionmaker[AsyncSession],
        publisher: AbstractChannel,
        policy: RetryPolicy,
        *,
        executor: Executor | None = None,
        acks: Acks | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self._spec = spec
        self._max_body_bytes = max_body_bytes
        self._acks = acks
        # Metric children looked up once, not per message.
        self._latency = metrics.HANDLE_DURATION.labels(spec.name, spec.queue_name)
        self._handled_children: dict[tuple[str, bool], Counter] = {}
        self._handlers = handlers
        self._sessions = sessions
        self._publisher = publisher
        self._policy = policy
        self._executor = executor

    async def process(self, message: InboundMessage) -> None:
        started = time.perf_counter()
        headers = dict(message.headers or {})
        ctx, unreadable = self._safe_context(message, headers)
        with (
            correlated(ctx.correlation_id),
            bound(message_id=ctx.message_id, event_type=ctx.event_type),
            self._consuming(ctx),
        ):
            try:
                duplicate = await self._apply(message, headers, ctx, unreadable)
            except Exception as exc:  # every failure is mapped once, below
                tracing.failed(exc)
                await self._fail(message, headers, ctx, exc)
            else:
                await self._ack_all([message])
                self._handled(ctx.event_type, duplicate).inc()
                if duplicate:
                    log.info("duplicate_acked")
        self._latency.observe(time.perf_counter() - started)

    async def process_batch(self, messages: list[InboundMessage]) -> None:
        """Apply several messages (distinct aggregates) in one transaction, then ack each.

        If anything in the batch fails, the transaction rolls back as a whole and every
        message is processed again on its own, so that only the failing one is retried
        or dead-lettered. A handler's only effects are in its transaction, so running it
        again after a rollback is safe.
        """
        if len(messages) == 1:
            await self.process(messages[0])
            return
        started = time.perf_counter()
        prepared: list[_Prepared] = []
        for message in messages:
            headers = dict(message.headers or {})
            try:
                ctx = self._context(message, headers)
                payload, handler = self._decode(message, headers, ctx)
            except Exception:  # bad headers or body: this message alone is dead-lettered
                await self.process(message)  # dead-letters it, with the reason
                continue
            prepared.append(_Prepared(message, ctx, payload, handler))
        try:
            duplicates = await self._apply_all(prepared)
        except Exception as exc:  # one failure: fall back to one transaction per message
            log.info("batch_rolled_back", size=len(prepared), error=repr(exc))
            await asyncio.gather(*(self.process(p.message) for p in prepared))
            return
        elapsed = time.perf_counter() - started
        await self._ack_all([item.message for item in prepared])
        for item in prepared:
            duplicate = item.ctx.message_id in duplicates
            self._handled(item.ctx.event_type, duplicate).inc()
            self._latency.observe(elapsed)

    async def _apply_all(self, prepared: list[_Prepared]) -> set[str]:
        """One transaction for the batch; returns the ids recognised as duplicates."""
        async with self._sessions() as session, session.begin():
            claimed = await inbox.claim_many(
                session, consumer=self._spec.name,
                messages=[(p.ctx.message_id, p.ctx.event_type) for p in prepared],
            )
            duplicates: set[str] = set()
            for item in prepared:
                message_id = item.ctx.message_id
                if message_id not in claimed:
                    duplicates.add(message_id)
                    continue
                claimed.discard(message_id)  # the same id twice in a batch runs once
                with (
                    correlated(item.ctx.correlation_id),
                    bound(message_id=message_id, event_type=item.ctx.event_type),
                    self._consuming(item.ctx),
                    tracing.handling(item.ctx.event_type),
                ):
                    await item.handler(session, item.payload, item.ctx)
        return duplicates

    def _consuming(self, ctx: MessageContext) -> AbstractContextManager[object]:
        """The message's trace: a consume span, or its context passed on (shared.tracing)."""
        return tracing.consuming(
            ctx.headers, queue=self._spec.queue_name, event_type=ctx.event_type,
            message_id=ctx.message_id,
        )

    def _safe_context(self, message: InboundMessage, headers: dict[str, Any]
                      ) -> tuple[MessageContext, InvalidMessage | None]:
        """The message's context; for headers it cannot be built from, a bare one and the
        reason, so the message is dead-lettered alone instead of wedging its delivery."""
        try:
            return self._context(message, headers), None
        except Exception as exc:
            bare = MessageContext(
                message_id=str(message.message_id or ""), event_type=str(message.type or ""),
                correlation_id=None, causation_id=None, headers={}, redelivered=False,
                attempts=0, consumer=self._spec.name, executor=self._executor,
            )
            return bare, InvalidMessage(f"unreadable message headers: {type(exc).__name__}")

    def _context(self, message: InboundMessage, headers: dict[str, Any]) -> MessageContext:
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
            consumer=self._spec.name,
            routing_key=message.routing_key or "",
            aggregate_id=str(aggregate) if aggregate is not None else None,
            executor=self._executor,
        )

    def _decode(
        self, message: InboundMessage, headers: dict[str, Any], ctx: MessageContext
    ) -> tuple[Message, Handler]:
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
                f"consumer {self._spec.name!r} has no handler for {ctx.event_type!r}"
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

    async def _apply(
        self, message: InboundMessage, headers: dict[str, Any], ctx: MessageContext,
        unreadable: InvalidMessage | None = None,
    ) -> bool:
        """Run the handler and record the inbox row in one transaction; True for a duplicate.

        The inbox row is inserted *after* the handler, in the same transaction, so that a
        handler which first works outside the database (OCR for a minute) holds no
        transaction open meanwhile: the transaction begins with the handler's first
        statement. A duplicate running concurrently ends with a conflict on the inbox key
        and its effects are rolled back; a plain redelivery is caught by the cheap check
        before the handler runs.
        """
        if unreadable is not None:
            raise unreadable
        payload, handler = self._decode(message, headers, ctx)
        keys = {"consumer": self._spec.name, "message_id": ctx.message_id}
        async with self._sessions() as session:
            applied_before = await inbox.seen(session, **keys)
            # End the check's transaction before the handler.
            await end_transaction(session, commit=False)
            if applied_before:
                return True
            with tracing.handling(ctx.event_type):
                await handler(session, payload, ctx)
            if not await inbox.claim(session, event_type=ctx.event_type, **keys):
                await end_transaction(session, commit=False)
                return True
            await end_transaction(session, commit=True)
        return False

    async def _fail(
        self,
        message: InboundMessage,
        headers: dict[str, Any],
        ctx: MessageContext,
        exc: Exception,
    ) -> None:
        failure = Failure.of(exc)
        attempts = ctx.attempts + 1
        outcome = classify(exc)
        retry = outcome is Outcome.RETRY and attempts < self._policy.max_attempts
        target = (
            self._spec.retry_queue_name(self._policy.delay_for(attempts))
            if retry else self._spec.dlq_name
        )
        new_headers = failure_headers(
            headers, failure, attempts=attempts, queue=self._spec.queue_name,
            routing_key=message.routing_key or "",
        )
        log.warning(
            "message_failed", outcome="retry" if retry else "dead_letter", target=target,
            attempts=attempts, error_type=failure.error_type, error=failure.error_message,
            where=failure.where,
        )
        try:
            await self._publish_copy(message, new_headers, target)
        except Exception as publish_exc:  # redelivered; nothing is lost
            log.warning("failure_publish_failed", target=target, error=repr(publish_exc))
            self._failed(ctx.event_type, "requeued", "transient", exc)
            await acks.requeue(message)
            self._settled(message)
            return
        await acks.ack(message)
        self._settled(message)
        if retry:
            self._failed(ctx.event_type, "retried", "transient", exc)
        else:
            reason = "exhausted" if outcome is Outcome.RETRY else "permanent"
            self._failed(ctx.event_type, "dead_lettered", reason, exc)

    def _failed(self, event_type: str, outcome: str, reason: str, exc: Exception) -> None:
        metrics.FAILED.labels(
            self._spec.name, self._spec.queue_name, event_type, outcome, reason,
            type(exc).__name__,
        ).inc()

    def _handled(self, event_type: str, duplicate: bool) -> Counter:
        child = self._handled_children.get((event_type, duplicate))
        if child is None:
            child = metrics.HANDLED.labels(
                self._spec.name, self._spec.queue_name, event_type, str(duplicate)
            )
            self._handled_children[(event_type, duplicate)] = child
        return child

    async def _ack_all(self, messages: list[InboundMessage]) -> None:
        if self._acks is None:
            for message in messages:
                await acks.ack(message)
        else:
            await self._acks.ack(messages)

    def _settled(self, message: InboundMessage) -> None:
        if self._acks is not None:
            self._acks.settled(message)

    async def _publish_copy(
        self, message: InboundMessage, headers: dict[str, Any], routing_key: str
    ) -> None:
        """The same message (id, type, properties, body) with new headers, confirmed."""
        copy = aio_pika.Message(
            body=message.body,
            headers=headers,
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            correlation_id=message.correlation_id,
            message_id=message.message_id,
            timestamp=message.timestamp,
            type=message.type,
            app_id=message.app_id,
        )
        exchange = self._publisher.default_exchange
        await exchange.publish(copy, routing_key=routing_key, mandatory=True)
