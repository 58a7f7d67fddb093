"""The spans of a batch through the processor, on fakes, with tracing on: one consume span
linked to every other message's trace; the handler runs in it when the batch is of one
event type, in a handle span per type when it is of several; each message's follow-ups
carry its own trace."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, cast

from aio_pika.abc import AbstractChannel
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared import messaging as m
from shared import tracing
from shared.events import Message, ProfileCreated, UserRegistered, encode
from tests.unit.test_failure_routing import POLICY, SPEC, Channel, Delivery
from workers.runtime.context import MessageContext
from workers.runtime.processor import Processor
from workers.runtime.sessions import Batched

TRACES = [f"{i + 1:032x}" for i in range(3)]


class _Claimed:
    def __init__(self, ids: list[str]) -> None:
        self._ids = ids

    def scalars(self) -> list[str]:
        return self._ids


class BatchSession:
    """Just enough of a session for a batch: every message new to the inbox."""

    async def __aenter__(self) -> BatchSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def begin(self) -> BatchSession:
        return self

    async def execute(self, _: object, params: dict[str, Any] | None = None) -> _Claimed:
        return _Claimed(list((params or {}).get("message_ids", [])))


def _delivery(event: Message, trace_id: str) -> Delivery:
    headers = {m.H_SCHEMA_VERSION: 1, m.H_TRACEPARENT: f"00-{trace_id}-b7ad6b7169203331-01"}
    return Delivery(type=event.event_type, body=encode(event), headers=headers)


def _processor(seen: list[tuple[str, str | None]]) -> Processor:
    async def one(session: AsyncSession, message: Message, ctx: MessageContext) -> None:
        seen.append((ctx.event_type, tracing.outgoing()[0]))

    async def many(session: AsyncSession, items: Sequence[tuple[Message, MessageContext]]) -> None:
        seen.extend((ctx.event_type, ctx.trace[0] if ctx.trace else None) for _, ctx in items)

    handlers = {
        UserRegistered.event_type: (UserRegistered, Batched(one, many)),
        ProfileCreated.event_type: (ProfileCreated, one),
    }
    sessions = cast(async_sessionmaker[AsyncSession], BatchSession)
    return Processor(SPEC, handlers, sessions, cast(AbstractChannel, Channel()), POLICY)


async def test_a_batch_of_one_event_type_is_one_span(spans: InMemorySpanExporter) -> None:
    seen: list[tuple[str, str | None]] = []
    batch = [
        _delivery(UserRegistered(user_id=uuid.uuid4(), email=f"u{i}@b.io"), trace)
        for i, trace in enumerate(TRACES)
    ]
    await _processor(seen).process_batch(cast(list[Any], batch))
    (consume,) = spans.get_finished_spans()
    assert consume.name == "fr process"
    attributes = consume.attributes or {}
    assert attributes["messaging.rabbitmq.message.type"] == "user.registered"
    assert attributes["messaging.batch.message_count"] == 3
    assert consume.parent is not None and f"{consume.parent.trace_id:032x}" == TRACES[0]
    assert [f"{link.context.trace_id:032x}" for link in consume.links] == TRACES[1:]
    # Each message's follow-ups carry its own trace on.
    assert [traceparent.split("-")[1] for _, traceparent in seen if traceparent] == TRACES
    assert all(d.settled == ["ack"] for d in batch)


async def test_a_batch_of_several_event_types_has_a_handle_span_per_type(
    spans: InMemorySpanExporter,
) -> None:
    seen: list[tuple[str, str | None]] = []
    user = uuid.uuid4()
    batch = [
        _delivery(UserRegistered(user_id=user, email="u@b.io"), TRACES[0]),
        _delivery(ProfileCreated(user_id=uuid.uuid4()), TRACES[1]),
    ]
    await _processor(seen).process_batch(cast(list[Any], batch))
    finished = spans.get_finished_spans()
    consume = next(s for s in finished if s.name == "fr process")
    assert "messaging.rabbitmq.message.type" not in (consume.attributes or {})
    handles = sorted(s.name for s in finished if s.name.startswith("handle "))
    assert handles == ["handle profile.created", "handle user.registered"]
    assert consume.context is not None
    assert all(
        s.parent is not None and s.parent.span_id == consume.context.span_id
        for s in finished if s.name.startswith("handle ")
    )
    # The lone profile.created message runs in its own trace context, not the span's.
    assert (ProfileCreated.event_type, f"00-{TRACES[1]}-b7ad6b7169203331-01") in seen
