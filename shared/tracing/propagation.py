"""W3C trace context: parsing a ``traceparent``, what a message carries (:class:`Carried`),
passing it through while tracing is off (an incoming HTTP request, a message handled in a
batch), and what an event written now carries (:func:`outgoing`)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanContext, TraceFlags

from shared.messaging import H_TRACEPARENT, H_TRACESTATE
from shared.tracing import mode

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16
_FLAGS = (TraceFlags(TraceFlags.DEFAULT), TraceFlags(TraceFlags.SAMPLED))
"""The two trace flags a parsed context can have, shared (not one object per message)."""

TraceHeaders = tuple[str, str | None]
"""``(traceparent, tracestate or None)``."""

_passthrough: ContextVar[TraceHeaders | None] = ContextVar("ams_trace_context", default=None)


# --- parsing -----------------------------------------------------------------------------------
def parse_traceparent(value: object) -> SpanContext | None:
    """The remote span context of a valid W3C ``traceparent``, else None (never raises)."""
    if not isinstance(value, str) or len(value) > 512:
        return None
    match = _TRACEPARENT.fullmatch(value.strip())
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or trace_id == _ZERO_TRACE:
        return None
    if span_id == _ZERO_SPAN:
        return None
    return SpanContext(
        int(trace_id, 16), int(span_id, 16), is_remote=True,
        trace_flags=_FLAGS[int(flags, 16) & TraceFlags.SAMPLED],
    )


def _valid_headers(traceparent: object, tracestate: object) -> TraceHeaders | None:
    if parse_traceparent(traceparent) is None:
        return None
    assert isinstance(traceparent, str)
    return traceparent.strip(), _valid_state(tracestate)


def _valid_state(tracestate: object) -> str | None:
    return tracestate if isinstance(tracestate, str) and len(tracestate) <= 512 else None


@dataclass(frozen=True, slots=True)
class Carried:
    """A message's valid trace context, parsed once: the headers its follow-up events
    carry on (``headers``) and the remote span context a batch span links to."""

    headers: TraceHeaders
    context: SpanContext


def carried(headers: Mapping[str, Any]) -> Carried | None:
    """The valid trace context of a message's AMQP ``headers``, or None (never raises)."""
    traceparent = headers.get(H_TRACEPARENT)
    if traceparent is None:
        return None
    context = parse_traceparent(traceparent)
    if context is None:
        return None
    assert isinstance(traceparent, str)
    return Carried((traceparent.strip(), _valid_state(headers.get(H_TRACESTATE))), context)



# --- HTTP --------------------------------------------------------------------------------------
@contextmanager
def incoming_http(headers: Iterable[tuple[bytes, bytes]]) -> Iterator[None]:
    """With tracing off, keep a valid incoming ``traceparent`` for the events of the request
    (with tracing on, the OpenTelemetry middleware has made it the current context)."""
    if mode._active is not None:
        yield
        return
    traceparent = tracestate = None
    for name, value in headers:
        if name == b"traceparent":
            traceparent = value.decode("latin-1")
        elif name == b"tracestate":
            tracestate = value.decode("latin-1")
    with _passing_through(traceparent, tracestate):
        yield


@contextmanager
def _passing_through(traceparent: object, tracestate: object) -> Iterator[None]:
    """Keep a valid trace context for the events written in the block (tracing off)."""
    carried = _valid_headers(traceparent, tracestate) if traceparent else None
    if carried is None:
        yield
        return
    token = _passthrough.set(carried)
    try:
        yield
    finally:
        _passthrough.reset(token)


@contextmanager
def _carrying(headers: TraceHeaders) -> Iterator[None]:
    token = _passthrough.set(headers)
    try:
        yield
    finally:
        _passthrough.reset(token)


# --- what events carry -------------------------------------------------------------------------
def outgoing() -> tuple[str | None, str | None]:
    """Trace context for an event written now: the one passed through (tracing off, or a
    message handled in a batch, :func:`continuing`), else the current span's (on);
    ``(None, None)`` outside any trace."""
    through = _passthrough.get()
    if through is not None:
        return through
    if mode._active is None:
        return None, None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get(H_TRACEPARENT), carrier.get(H_TRACESTATE)


def current_trace_ids() -> tuple[str, str] | None:
    """``(trace_id, span_id)`` in hex of the passed-through context or the current span."""
    through = _passthrough.get()
    if through is not None:
        parts = through[0].split("-")
        return parts[1], parts[2]
    if mode._active is None:
        return None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id of a stored (validated) ``traceparent``, for log lines."""
    return traceparent.split("-")[1] if traceparent else None

