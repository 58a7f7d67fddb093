"""W3C trace context from the HTTP request to the last follow-up event, and OpenTelemetry
spans along the way.

Two modes, chosen once per process by :func:`configure_tracing`:

- **Off** (the default, ``TRACING_ENABLED`` unset): no SDK, no spans, no exporter. Trace
  context is only *passed through*: a valid incoming ``traceparent``/``tracestate`` (HTTP
  header or AMQP header) is kept in a context variable, stored on the outbox rows written
  meanwhile and published with them, so a caller's trace id still reaches every event.
  Nothing is parsed when no such header arrives: the hot paths pay one dictionary lookup.
- **On**: an SDK tracer provider exporting through OTLP (or ``console``/``none``, chosen by
  the standard ``OTEL_TRACES_EXPORTER``; endpoint, headers, sampler, service name and
  resource come from the other standard ``OTEL_*`` variables). HTTP server spans come from
  Litestar's OpenTelemetry plugin, database spans from the SQLAlchemy instrumentation
  (the relay's plain asyncpg connections: the asyncpg one), Redis spans from the Redis
  one; the relay records one publish span per batch linked to each event's origin, and
  the worker runtime a consume span (child of the message's trace context) with a handle
  span inside (workers record no statement spans unless ``WORKER_TRACE_STATEMENTS``).
  Events written inside a span carry that span as their parent. Messages
  applied together in one transaction share one consume span, a child of the first
  sampled message's context linked to the other messages' traces (:func:`consuming_batch`;
  of one event type, their handler runs in it, without a handle span); each message's
  events carry its own trace context on.
  Spans wait for the exporter in memory, so the process collects its youngest
  generation of garbage less often (:func:`_collect_less_often`).

A malformed ``traceparent`` is ignored (a new trace starts), never an error.
"""

from __future__ import annotations

import atexit
import gc
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)
from opentelemetry.util.types import Attributes

from shared.messaging import H_TRACEPARENT, H_TRACESTATE

if TYPE_CHECKING:
    from litestar.plugins import PluginProtocol
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from sqlalchemy.ext.asyncio import AsyncEngine

    from shared.config import ObservabilitySettings

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16
_FLAGS = (TraceFlags(TraceFlags.DEFAULT), TraceFlags(TraceFlags.SAMPLED))
"""The two trace flags a parsed context can have, shared (not one object per message)."""
_ROOT = Context()
"""The empty context: a batch's span starts a trace of its own (it links the messages')."""

_NOTHING: AbstractContextManager[object] = nullcontext()
"""What the hot paths enter while tracing is off: one shared, reusable no-op."""

TraceHeaders = tuple[str, str | None]
"""``(traceparent, tracestate or None)``."""

_passthrough: ContextVar[TraceHeaders | None] = ContextVar("ams_trace_context", default=None)


@dataclass
class _Active:
    provider: TracerProvider
    tracer: trace.Tracer
    parent_based: bool
    """The sampler follows the parent's decision (the default, ``parentbased_*``): under an
    unsampled parent nothing is recorded, so the runtime creates no spans there at all."""
    max_links: int
    """Links per span, the SDK's limit (``OTEL_SPAN_LINK_COUNT_LIMIT``, default 128): a
    batch span links the first ones and counts every message in
    ``messaging.batch.message_count``; links past it are not even built (the SDK would
    drop them)."""
    gc_threshold: tuple[int, int, int] = (700, 10, 10)
    """The process's garbage-collection thresholds before tracing raised them (restored
    by :func:`shutdown_tracing`)."""
    instrumentors: list[Any] = field(default_factory=list)


_active: _Active | None = None


class _Spanning:
    """A span started on entering the block, current in it and ended after it: what
    ``Tracer.start_as_current_span`` returns, without its two generator-based context
    managers (one per batch, and per message handled alone, of a busy worker). An
    exception leaving the block is recorded on the span and sets its status, as there."""

    __slots__ = ("_attributes", "_context", "_kind", "_links", "_name", "_span", "_token",
                 "_tracer")

    def __init__(
        self, tracer: trace.Tracer, name: str, *, context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL, attributes: Attributes = None,
        links: list[Link] | None = None,
    ) -> None:
        self._tracer, self._name, self._context = tracer, name, context
        self._kind, self._attributes, self._links = kind, attributes, links

    def __enter__(self) -> Span:
        span = self._tracer.start_span(
            self._name, self._context, self._kind, self._attributes, self._links
        )
        self._span = span
        self._token = otel_context.attach(trace.set_span_in_context(span))
        return span

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        span = self._span
        try:
            otel_context.detach(self._token)
            if isinstance(exc, Exception) and span.is_recording():
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        finally:
            span.end()


class _Within:
    """``span`` (a NonRecordingSpan: a context continued without a span) is current in
    the block."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: Span) -> None:
        self._span = span

    def __enter__(self) -> Span:
        self._token = otel_context.attach(trace.set_span_in_context(self._span))
        return self._span

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        otel_context.detach(self._token)


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


# --- mode --------------------------------------------------------------------------------------
def enabled() -> bool:
    """Whether this process records spans."""
    return _active is not None


def configure_tracing(
    settings: ObservabilitySettings, *, service: str, exporter: SpanExporter | None = None
) -> bool:
    """Turn tracing on when ``settings.tracing_enabled`` (or an ``exporter`` is given, as the
    tests do with an in-memory one). Returns whether it is on."""
    global _active  # noqa: PLW0603 (one tracer provider per process, as OpenTelemetry has)
    if _active is not None or not (settings.tracing_enabled or exporter is not None):
        return _active is not None
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource  # noqa: PLC0415
    from opentelemetry.sdk.trace import SpanLimits, TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: PLC0415

    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service}
    limits = SpanLimits()  # the OTEL_SPAN_*_LIMIT variables, as the provider would read them
    provider = TracerProvider(resource=Resource.create(attributes), span_limits=limits)
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        _add_standard_exporter(provider, os.environ.get("OTEL_TRACES_EXPORTER", "otlp"))
        trace.set_tracer_provider(provider)
        atexit.register(shutdown_tracing)  # flush the last spans of the process
    from opentelemetry.sdk.trace.sampling import ParentBased  # noqa: PLC0415

    parent_based = isinstance(provider.sampler, ParentBased)
    max_links = sys.maxsize if limits.max_links is None else limits.max_links
    _active = _Active(
        provider, provider.get_tracer("ams"), parent_based, max_links, gc.get_threshold()
    )
    _collect_less_often(_active.gc_threshold)
    _instrument_libraries(_active)
    return True


YOUNG_GC_THRESHOLD = 10_000
"""Allocations between two collections of the youngest generation while tracing is on
(CPython's default: 700)."""


def _collect_less_often(threshold: tuple[int, int, int]) -> None:
    """Raise the youngest generation's collection threshold while tracing is on.

    A span lives until the exporter sends it, seconds later in a batch of hundreds, and
    with it its attributes and links (a few container objects each, one link per message
    of a busy worker's batches). Off, a worker allocates almost nothing that outlives a
    message (a few collections per thousand messages); on, those objects set off one
    collection every 700 allocations, and each collection of an older generation walks all
    the spans still queued. In the consumer benchmark with every message sampled that was
    12-14 us of collection per message against 1-3 off, a third of what tracing cost; a
    collection every 10,000 allocations walks about as much each time, several times less
    often."""
    young, *older = threshold
    gc.set_threshold(max(young, YOUNG_GC_THRESHOLD), *older)


def _add_standard_exporter(provider: TracerProvider, names: str) -> None:
    from opentelemetry.sdk.trace.export import (  # noqa: PLC0415
        BatchSpanProcessor,
        ConsoleSpanExporter,
    )

    for name in (n.strip() for n in names.split(",") if n.strip()):
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
                OTLPSpanExporter,
            )

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        elif name == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        elif name != "none":
            raise ValueError(
                f"OTEL_TRACES_EXPORTER={names!r}: unknown exporter {name!r} "
                "(otlp, console or none; OTLP is sent over HTTP/protobuf)"
            )


def _instrument_libraries(active: _Active) -> None:
    """Redis commands, and the statements of every SQLAlchemy engine created from now on
    (:func:`shared.db.create_engine` looks ``create_async_engine`` up when called)."""
    from opentelemetry.instrumentation.redis import RedisInstrumentor  # noqa: PLC0415
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor  # noqa: PLC0415

    redis = RedisInstrumentor()
    redis.instrument(tracer_provider=active.provider)
    # Its declared range stops below SQLAlchemy 2.1; the engine events it uses are the same
    # (tests/integration/test_tracing.py checks the statement spans).
    sqlalchemy = SQLAlchemyInstrumentor()
    sqlalchemy.instrument(
        tracer_provider=active.provider, enable_commenter=False, skip_dep_check=True
    )
    active.instrumentors += [redis, sqlalchemy]


def instrument_asyncpg() -> None:
    """Spans for the statements of plain asyncpg connections (the relay), when on.

    Only where asyncpg is used directly: under SQLAlchemy (instrumented itself) it
    would record every statement twice."""
    if _active is None:
        return
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor  # noqa: PLC0415

    instrumentor = AsyncPGInstrumentor()  # type: ignore[no-untyped-call]
    instrumentor.instrument(tracer_provider=_active.provider)
    _active.instrumentors.append(instrumentor)


def untraced() -> AbstractContextManager[object]:
    """The instrumented libraries record nothing for what is made or run in the block."""
    if _active is None:
        return _NOTHING
    from opentelemetry.instrumentation.utils import suppress_instrumentation  # noqa: PLC0415

    return suppress_instrumentation()


def untraced_engine(make: Callable[[], AsyncEngine]) -> AsyncEngine:
    """The engine ``make`` returns, recording no spans when on (``WORKER_TRACE_STATEMENTS``
    off): made :func:`untraced`, it has no statement spans; and its connection checkouts,
    one per transaction, record no "connect" span either. The SQLAlchemy instrumentation
    wraps ``Engine.connect`` for every engine, made untraced or not; this engine gets the
    unwrapped method as its own."""
    if _active is None:
        return make()
    with untraced():
        engine = make()
    sync_engine = engine.sync_engine
    unwrapped = getattr(type(sync_engine).connect, "__wrapped__", None)  # wrapt's original
    if unwrapped is not None:
        sync_engine.connect = unwrapped.__get__(sync_engine)  # type: ignore[method-assign]
    return engine


def shutdown_tracing() -> None:
    """Flush and stop (process exit, or the end of a test)."""
    global _active
    active, _active = _active, None
    if active is None:
        return
    gc.set_threshold(*active.gc_threshold)
    for instrumentor in active.instrumentors:
        instrumentor.uninstrument()
    active.provider.shutdown()


# --- HTTP --------------------------------------------------------------------------------------
def http_plugins(title: str) -> list[PluginProtocol]:
    """Litestar's OpenTelemetry plugin (server spans; honours ``traceparent``) when on."""
    if _active is None:
        return []
    from litestar.plugins.opentelemetry import (  # noqa: PLC0415
        OpenTelemetryConfig,
        OpenTelemetryPlugin,
    )

    config = OpenTelemetryConfig(
        tracer_provider=_active.provider, exclude=["^/health$", "^/ready$", "^/metrics$"],
        exclude_spans=["receive", "send"],
    )
    return [OpenTelemetryPlugin(config)]


@contextmanager
def incoming_http(headers: Iterable[tuple[bytes, bytes]]) -> Iterator[None]:
    """With tracing off, keep a valid incoming ``traceparent`` for the events of the request
    (with tracing on, the OpenTelemetry middleware has made it the current context)."""
    if _active is not None:
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


# --- what events carry -------------------------------------------------------------------------
def outgoing() -> tuple[str | None, str | None]:
    """Trace context for an event written now: the one passed through (tracing off, or a
    message handled in a batch, :func:`continuing`), else the current span's (on);
    ``(None, None)`` outside any trace."""
    through = _passthrough.get()
    if through is not None:
        return through
    if _active is None:
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
    if _active is None:
        return None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id of a stored (validated) ``traceparent``, for log lines."""
    return traceparent.split("-")[1] if traceparent else None


# --- relay -------------------------------------------------------------------------------------
def publishing(
    database: str, exchange: str, origins: Iterable[str | None], count: int
) -> AbstractContextManager[object]:
    """One PRODUCER span per published batch, linked to each event's origin (the span that
    wrote it), when on. The events themselves keep their origin's ``traceparent``, so a
    consumer continues the request's trace."""
    if _active is None:
        return _NOTHING
    links: list[Link] = []
    for traceparent in origins:
        if len(links) >= _active.max_links:
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
        _active.tracer, f"{exchange} publish", kind=SpanKind.PRODUCER, links=links,
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
    if _active is None:
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
        if _active.parent_based and not origin.trace_flags.sampled:
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
        _active.tracer, f"{queue} process", context=parent, kind=SpanKind.CONSUMER,
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
    if _active is None:
        return _NOTHING
    parent, links, recorded = _batch_parent(origins, _active)
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
        _active.tracer, f"{queue} process", context=context, kind=SpanKind.CONSUMER,
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


@contextmanager
def _carrying(headers: TraceHeaders) -> Iterator[None]:
    token = _passthrough.set(headers)
    try:
        yield
    finally:
        _passthrough.reset(token)


def handling(event_type: str, count: int | None = None) -> AbstractContextManager[object]:
    """The handler's own span (its database statements are its children), when on; for a
    batch, one span for the ``count`` messages of ``event_type`` it handles."""
    if _active is None:
        return _NOTHING
    if _active.parent_based:
        current = trace.get_current_span().get_span_context()
        if current.is_valid and not current.trace_flags.sampled:
            return _NOTHING  # it would not be recorded
    if count is None:
        return _Spanning(_active.tracer, f"handle {event_type}")
    return _Spanning(
        _active.tracer, f"handle {event_type}",
        attributes={"messaging.batch.message_count": count},
    )


def failed(exc: BaseException) -> None:
    """Mark the current span as failed with ``exc`` (a handling attempt that raised)."""
    if _active is None:
        return
    span = trace.get_current_span()
    span.record_exception(exc)
    span.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))


__all__ = [
    "YOUNG_GC_THRESHOLD",
    "Carried",
    "carried",
    "configure_tracing",
    "consuming",
    "consuming_batch",
    "continuing",
    "current_trace_ids",
    "enabled",
    "failed",
    "handling",
    "http_plugins",
    "incoming_http",
    "instrument_asyncpg",
    "outgoing",
    "parse_traceparent",
    "publishing",
    "shutdown_tracing",
    "trace_id_of",
    "untraced",
    "untraced_engine",
]
