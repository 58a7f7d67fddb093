"""The spans of the relay (one per published batch) and of the worker runtime (a consume
span per message or batch, a handle span per handler), each a no-op while tracing is off."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, TraceState

from shared.messaging import H_TRACEPARENT, H_TRACESTATE
from shared.tracing import mode
from shared.tracing.mode import _Active
from shared.tracing.propagation import (
    Carried,
    _carrying,
    _passing_through,
    parse_traceparent,
)
from shared.tracing.spanning import _NOTHING, _Spanning, _Within

_ROOT = Context()
"""The empty context: a batch's span starts a trace of its own (it links the messages')."""


# --- relay -------------------------------------------------------------------------------------
def publishing(
    database: str, exchange: str, origins: Iterable[str | None], count: int
) -> AbstractContextManager[object]:
    """One PRODUCER span per published batch, linked to each event's origin (the span that
    wrote it), when on. The events themselves keep their origin's ``traceparent``, so a
    consumer continues the request's trace."""
    active = mode._active
    if active is None:
        return _NOTHING
    links: list[Link] = []
    for traceparent in origins:
        if len(links) >= active.max_links:
            break
        origin = parse_traceparent(traceparent)
        if origin is not None:
            links.append(Link(origin))
    attributes: dict[str, str | int] = {
        "messaging.system": "rabbitmq", "messaging.operation.type": "send",
        "messaging.destination.name": exchange, "messaging.batch.message_count": count,
        "db.namespace": database,
    }
    return _Spanning(
        active.tracer, f"{exchange} publish", kind=SpanKind.PRODUCER, links=links,
        attributes=attributes,
    )


# --- consumers ---------------------------------------------------------------------------------
def consuming(
    headers: Mapping[str, Any], *, queue: str, event_type: str, message_id: str
) -> AbstractContextManager[object]:
    """Process one message in its trace: a CONSUMER span, child of the message's
    ``traceparent`` (a new trace when it has none or a malformed one), when on; off, the
    message's valid trace context is passed through to the events its handler writes."""
    traceparent = headers.get(H_TRACEPARENT)
    active = mode._active
    if active is None:
        if traceparent is None:
            return _NOTHING
        return _passing_through(traceparent, headers.get(H_TRACESTATE))
    parent = None
    origin = parse_traceparent(traceparent) if traceparent is not None else None
    if origin is not None:  # a malformed traceparent yields no parent: a new trace
        # What the W3C propagator extracts, without its generic carrier machinery (this
        # runs once per message).
        tracestate = headers.get(H_TRACESTATE)
        if isinstance(tracestate, str):
            origin = SpanContext(
                origin.trace_id, origin.span_id, is_remote=True, trace_flags=origin.trace_flags,
                trace_state=TraceState.from_header([tracestate]),
            )
        if active.parent_based and not origin.trace_flags.sampled:
            # Not sampled upstream: nothing below would be recorded. Continue the context
            # (follow-ups carry it, unsampled) without the cost of spans.
            return _Within(NonRecordingSpan(origin))
        parent = trace.set_span_in_context(NonRecordingSpan(origin))
    attributes = {
        "messaging.system": "rabbitmq", "messaging.operation.type": "process",
        "messaging.destination.name": queue, "messaging.message.id": message_id,
        "messaging.rabbitmq.message.type": event_type,
    }
    return _Spanning(
        active.tracer, f"{queue} process", context=parent, kind=SpanKind.CONSUMER,
        attributes=attributes,
    )


def consuming_batch(
    queue: str, origins: Iterable[Carried | None], count: int, event_type: str | None = None
) -> AbstractContextManager[object]:
    """Process a batch of messages in one transaction: one CONSUMER span for the batch, when
    on. It continues the first sampled message's trace (a child of its context) and links
    each other trace of a sampled message once (:func:`_batch_parent`). ``event_type``:
    the batch's one event type (its ``messaging.rabbitmq.message.type``), whose handler
    runs in this span without a :func:`handling` span of its own (a span costs the
    exporter as much as a few links); a batch of several types has one per type.

    A message in a batch has no span of its own: its follow-up events continue its own
    trace (:func:`continuing`, ``MessageContext.trace``), so one trace id still runs from
    the request to the last event. Under a parent-based sampler, a batch of messages whose
    traces were all left unsampled upstream records nothing."""
    active = mode._active
    if active is None:
        return _NOTHING
    parent, links, recorded = _batch_parent(origins, active)
    if not recorded:
        return _NOTHING
    attributes: dict[str, str | int] = {
        "messaging.system": "rabbitmq", "messaging.operation.type": "process",
        "messaging.destination.name": queue, "messaging.batch.message_count": count,
    }
    if event_type is not None:
        attributes["messaging.rabbitmq.message.type"] = event_type
    context = _ROOT if parent is None else trace.set_span_in_context(NonRecordingSpan(parent))
    return _Spanning(
        active.tracer, f"{queue} process", context=context, kind=SpanKind.CONSUMER,
        links=links, attributes=attributes,
    )


def _batch_parent(
    origins: Iterable[Carried | None], active: _Active
) -> tuple[SpanContext | None, list[Link], bool]:
    """The batch span's parent, its links, and whether it is recorded at all.

    The parent is the first sampled message's context; every other trace of a sampled
    message gets one link (the first ``max_links``, the SDK's limit). A Link costs the SDK
    and the exporter a few microseconds each, per message of a busy worker, so none is
    built for what adds nothing: the parent's trace, a trace already linked (two events of
    one request), an unsampled trace (no span to link to). Without a sampled message, a
    message without trace context makes the batch a root (a trace of its own, as a lone
    message starts); under a sampler that is not parent-based, it is recorded anyway."""
    parent: Carried | None = None
    links: list[Link] = []
    seen: set[int] = set()
    recorded = not active.parent_based
    for origin in origins:
        if origin is None:
            recorded = True
            continue
        context = origin.context
        if not context.trace_flags.sampled or context.trace_id in seen:
            continue
        seen.add(context.trace_id)
        if parent is None:
            parent = origin
        elif len(links) < active.max_links:
            links.append(Link(context))
    if parent is None:
        return None, links, recorded
    return _with_state(parent), links, True


def _with_state(origin: Carried) -> SpanContext:
    """The origin's context with its ``tracestate`` (kept by a child span, not by a link)."""
    tracestate = origin.headers[1]
    if tracestate is None:
        return origin.context
    context = origin.context
    return SpanContext(
        context.trace_id, context.span_id, is_remote=True, trace_flags=context.trace_flags,
        trace_state=TraceState.from_header([tracestate]),
    )


def continuing(origin: Carried | None) -> AbstractContextManager[object]:
    """Handle one message of a batch in its own trace context without a span: the events
    written and the lines logged in the block carry the message's trace context."""
    if origin is None:
        return _NOTHING
    return _carrying(origin.headers)


def handling(event_type: str, count: int | None = None) -> AbstractContextManager[object]:
    """The handler's own span (its database statements are its children), when on; for a
    batch, one span for the ``count`` messages of ``event_type`` it handles."""
    active = mode._active
    if active is None:
        return _NOTHING
    if active.parent_based:
        current = trace.get_current_span().get_span_context()
        if current.is_valid and not current.trace_flags.sampled:
            return _NOTHING  # it would not be recorded
    if count is None:
        return _Spanning(active.tracer, f"handle {event_type}")
    return _Spanning(
        active.tracer, f"handle {event_type}",
        attributes={"messaging.batch.message_count": count},
    )


def failed(exc: BaseException) -> None:
    """Mark the current span as failed with ``exc`` (a handling attempt that raised)."""
    if mode._active is None:
        return
    span = trace.get_current_span()
    span.record_exception(exc)
    span.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))
