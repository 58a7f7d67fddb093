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
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared import tracing
from shared.correlation import correlated
from shared.errors import InvalidMessage
from shared.events import Message
from shared.logging import bound, get_logger
from shared.topology import ConsumerSpec, RetryDelay
from workers.runtime import acks, inbox, metrics
from workers.runtime.acks import Acks
from workers.runtime.amqp import InboundMessage
from workers.runtime.context import MessageContext
from workers.runtime.failures import Failure, Outcome, classify, failure_headers
from workers.runtime.reading import MAX_BODY_BYTES, Reader
from workers.runtime.sessions import Batched, Handler, end_transaction

log = get_logger(__name__)
_UNTRACED = nullcontext()


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A message of a batch, read and decoded."""

    message: InboundMessage
    ctx: MessageContext
    payload: Message
    handler: Handler
    origin: tracing.Carried | None


async def _run_group(session: AsyncSession, group: list[_Prepared]) -> None:
    """The new messages of one event type in a batch: all at once through a batch
    handler, else one by one, each in its correlation id, log keys and trace context."""
    handler = group[0].handler
    if isinstance(handler, Batched):
        await handler.many(session, [(item.payload, item.ctx) for item in group])
        return
    for item in group:
        ctx = item.ctx
        with (
            correlated(ctx.correlation_id),
            bound(message_id=ctx.message_id, event_type=ctx.event_type),
            tracing.continuing(item.origin),
        ):
            await handler(session, item.payload, ctx)


@dataclass(frozen=True)
class RetryPolicy:
    """How failures are retried: attempts in total, and the delay before each retry."""

    max_attempts: int
    delays: tuple[RetryDelay, ...]

    def delay_for(self, attempts: int) -> RetryDelay:
        return self.delays[min(attempts, len(self.delays)) - 1]


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
        self._reader = Reader(
            spec.name, handlers, executor=executor, max_body_bytes=max_body_bytes
        )
        self._acks = acks
        # Metric children looked up once, not per message.
        self._latency = metrics.HANDLE_DURATION.labels(spec.name, spec.queue_name)
        self._handled_children: dict[tuple[str, bool], Counter] = {}
        self._sessions = sessions
        self._publisher = publisher
        self._policy = policy

    async def process(self, message: InboundMessage) -> None:
        started = time.perf_counter()
        headers = dict(message.headers or {})
        ctx, unreadable = self._reader.safe_context(message, headers)
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
                # Counted before the ack: a crash in between counts the redelivery again
                # (as a duplicate) rather than not at all.
                self._handled(ctx.event_type, duplicate).inc()
                await self._ack_all([message])
                if duplicate:
                    log.info("duplicate_acked")
        self._latency.observe(time.perf_counter() - started)

    async def process_batch(self, messages: list[InboundMessage]) -> None:
        """Apply several messages (distinct aggregates) in one transaction, then ack them.

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
            item = self._prepare(message)
            if item is None:  # bad headers or body: this message alone is dead-lettered
                await self.process(message)  # dead-letters it, with the reason
            else:
                prepared.append(item)
        if not prepared:
            return
        origins = (item.origin for item in prepared)
        event_type: str | None = None  # the batch's one type, named by its span (tracing on)
        if tracing.enabled():
            event_type = prepared[0].ctx.event_type
            if any(item.ctx.event_type != event_type for item in prepared):
                event_type = None  # of several types: each one's handle span names it
        duplicates: set[str] | None
        queue = self._spec.queue_name
        with tracing.consuming_batch(queue, origins, len(prepared), event_type):
            try:
                duplicates = await self._apply_all(prepared)
            except Exception as exc:  # one failure: fall back to one transaction per message
                tracing.failed(exc)
                log.info("batch_rolled_back", size=len(prepared), error=repr(exc))
                duplicates = None
            else:
                self._count_handled(prepared, duplicates)  # before the ack, as in process()
                await self._ack_all([item.message for item in prepared])
        if duplicates is None:
            await asyncio.gather(*(self.process(item.message) for item in prepared))
            return
        elapsed = time.perf_counter() - started
        for _ in prepared:
            self._latency.observe(elapsed)

    def _prepare(self, message: InboundMessage) -> _Prepared | None:
        """Context, payload and handler of a message of a batch; None if it is unreadable."""
        headers = dict(message.headers or {})
        try:
            origin = tracing.carried(headers)
            ctx = self._reader.context(message, headers, origin.headers if origin else None)
            payload, handler = self._reader.decode(message, headers, ctx)
        except Exception:
            return None
        return _Prepared(message, ctx, payload, handler, origin)

    async def _apply_all(self, prepared: list[_Prepared]) -> set[str]:
        """One transaction for the batch; returns the ids recognised as duplicates."""
        async with self._sessions() as session, session.begin():
            claimed = await inbox.claim_many(
                session, consumer=self._spec.name,
                messages=[(p.ctx.message_id, p.ctx.event_type) for p in prepared],
            )
            duplicates: set[str] = set()
            groups: dict[str, list[_Prepared]] = {}
            for item in prepared:
                message_id = item.ctx.message_id
                if message_id not in claimed:
                    duplicates.add(message_id)
                    continue
                claimed.discard(message_id)  # the same id twice in a batch runs once
                groups.setdefault(item.ctx.event_type, []).append(item)
            # One aggregate per message in a batch: the event types may run in any order.
            # Of one event type (the usual batch), the handler runs in the batch's consume
            # span, which names the type; of several, each type's in a handle span.
            several = len(groups) > 1
            for event_type, group in groups.items():
                with tracing.handling(event_type, len(group)) if several else _UNTRACED:
                    await _run_group(session, group)
        return duplicates

    def _count_handled(self, prepared: list[_Prepared], duplicates: set[str]) -> None:
        counts: dict[tuple[str, bool], int] = {}
        for item in prepared:
            key = (item.ctx.event_type, item.ctx.message_id in duplicates)
            counts[key] = counts.get(key, 0) + 1
        for (event_type, duplicate), count in counts.items():
            self._handled(event_type, duplicate).inc(count)

    def _consuming(self, ctx: MessageContext) -> AbstractContextManager[object]:
        """The message's trace: a consume span, or its context passed on (shared.tracing)."""
        return tracing.consuming(
            ctx.headers, queue=self._spec.queue_name, event_type=ctx.event_type,
            message_id=ctx.message_id,
        )

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
        payload, handler = self._reader.decode(message, headers, ctx)
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
