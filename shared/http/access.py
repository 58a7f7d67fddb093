"""Correlation ids, incoming trace context and the access log: one middleware around the
whole application."""

from __future__ import annotations

import re
import time
from typing import Any

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from shared import correlation, tracing
from shared.logging import get_logger
from shared.messaging import H_CORRELATION_ID

CORRELATION_HEADER = H_CORRELATION_ID
"""Requests and responses carry the correlation id in the header events carry it in."""
_CORRELATION_HEADER = CORRELATION_HEADER.encode()
_VALID_CORRELATION_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

access_log = get_logger("access")


def correlation_middleware(app: ASGIApp) -> ASGIApp:
    """Reads or creates ``X-Correlation-ID``, makes it current (:mod:`shared.correlation`:
    the logs and the outbox read it), returns it;
    honours an incoming W3C ``traceparent`` (:mod:`shared.tracing`); writes one access line
    per request (method, route template, status, duration, correlation id, trace id).

    :func:`api_app` wraps the whole application with it (so unknown routes and refused
    bodies are logged too); another Litestar app may pass it as ``middleware=``.
    """

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        correlation_id = _incoming_correlation_id(scope) or correlation.new()
        encoded = correlation_id.encode()
        started = time.perf_counter()
        seen: dict[str, Any] = {"status": 500}

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                seen["trace"] = tracing.current_trace_ids()
                headers = list(message.get("headers", []))
                headers.append((_CORRELATION_HEADER, encoded))
                message["headers"] = headers
            await send(message)

        with (
            correlation.correlated(correlation_id),
            tracing.incoming_http(scope.get("headers", ())),
        ):
            try:
                await app(scope, receive, send_with_header)
            finally:
                _access_line(scope, seen, time.perf_counter() - started)

    return middleware


def _access_line(scope: Scope, seen: dict[str, Any], elapsed_s: float) -> None:
    path = scope.get("path", "")
    trace = seen.get("trace") or tracing.current_trace_ids()
    emit = access_log.debug if path in _QUIET_PATHS else access_log.info
    emit(
        "request", method=scope.get("method"), route=scope.get("path_template") or "<unmatched>",
        path=path, status=seen["status"], duration_ms=round(elapsed_s * 1000, 2),
        **({"trace_id": trace[0]} if trace else {}),
    )


_QUIET_PATHS = frozenset({"/health", "/ready", "/metrics"})
"""Probes and scrapes, every few seconds: their access lines only at DEBUG."""


def _incoming_correlation_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == _CORRELATION_HEADER:
            candidate = value.decode("latin-1")
            return candidate if _VALID_CORRELATION_ID.match(candidate) else None
    return None
