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
  generation of garbage less often (:func:`~shared.tracing.mode._collect_less_often`).

A malformed ``traceparent`` is ignored (a new trace starts), never an error.

The package: :mod:`~shared.tracing.propagation` (W3C trace context: parsing, what messages
and events carry, passing it through while off), :mod:`~shared.tracing.mode` (on or off:
set-up, exporters, instrumented libraries; it owns the process's tracing state),
:mod:`~shared.tracing.spans` (the relay's and consumers' spans) and
:mod:`~shared.tracing.spanning` (the small context managers those return). Import from here.
"""

from shared.tracing.mode import (
    YOUNG_GC_THRESHOLD,
    configure_tracing,
    enabled,
    http_plugins,
    instrument_asyncpg,
    shutdown_tracing,
    untraced,
    untraced_engine,
)
from shared.tracing.propagation import (
    Carried,
    TraceHeaders,
    carried,
    current_trace_ids,
    incoming_http,
    outgoing,
    parse_traceparent,
    trace_id_of,
)
from shared.tracing.spans import (
    consuming,
    consuming_batch,
    continuing,
    failed,
    handling,
    publishing,
)

__all__ = [
    "YOUNG_GC_THRESHOLD",
    "Carried",
    "TraceHeaders",
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
