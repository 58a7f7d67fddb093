"""The small context managers the span helpers return: the shared no-op entered while
tracing is off, a span current in a block (:class:`_Spanning`), and a context continued
without a span (:class:`_Within`)."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import Attributes

_NOTHING: AbstractContextManager[object] = nullcontext()
"""What the hot paths enter while tracing is off: one shared, reusable no-op."""


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
