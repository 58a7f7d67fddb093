"""Tracing on or off, once per process: the tracer provider and its exporters, the
instrumented libraries (SQLAlchemy, Redis, asyncpg, Litestar's HTTP server spans), the
garbage-collection threshold while on, and ways to record nothing (:func:`untraced`).

This module owns the process's tracing state, ``_active`` (None while off); the others
read it here, as ``mode._active``, when called."""

from __future__ import annotations

import atexit
import gc
import os
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

from shared.tracing.spanning import _NOTHING

if TYPE_CHECKING:
    from litestar.plugins import PluginProtocol
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from sqlalchemy.ext.asyncio import AsyncEngine

    from shared.config import ObservabilitySettings


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
