"""Litestar pieces every API shares: JSON errors, correlation ids, health, readiness, metrics.

Errors always have one shape, ``{"error": {"code", "message", "details"?}}``, whatever
raised them: a domain error from a service, a Litestar validation error, an unknown
route, a body that is too large, or a bug (500, never a stack trace). Services raise
:mod:`shared.errors`; this module maps them to HTTP once.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from http import HTTPStatus
from typing import Annotated, Any, Literal

import msgspec
from litestar import Litestar, MediaType, Request, Response, get
from litestar.datastructures import ResponseHeader
from litestar.enums import ScopeType
from litestar.exceptions import HTTPException, ValidationException
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController
from litestar.types import (
    ASGIApp,
    ExceptionHandlersMap,
    Message,
    Receive,
    ReceiveMessage,
    Scope,
    Send,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared import contract, correlation, tracing
from shared.auth import bearer_components
from shared.errors import (
    AuthenticationFailed,
    Conflict,
    DependencyUnavailable,
    DomainError,
    InvalidMessage,
    LegalHold,
    NotFound,
    PermissionDenied,
    QuotaExceeded,
    RateLimited,
    TransientError,
    ValidationFailed,
)
from shared.logging import get_logger
from shared.messaging import H_CORRELATION_ID

CORRELATION_HEADER = H_CORRELATION_ID
"""Requests and responses carry the correlation id in the header events carry it in."""
_CORRELATION_HEADER = CORRELATION_HEADER.encode()
NO_NUL = r"^[^\x00]*$"
"""``msgspec.Meta(pattern=NO_NUL)`` for request text that is stored or queried in PostgreSQL,
which refuses NUL characters (the request would end in a 500 instead of a 422)."""
_VALID_CORRELATION_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

log = get_logger(__name__)
access_log = get_logger("access")


class ErrorDetail(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What went wrong."""

    code: Annotated[str, msgspec.Meta(
        description="Stable, for programs: not_found, conflict, validation_failed, "
        "rate_limited, authentication_failed, bad_request, dependency_unavailable …",
        examples=["not_found"],
    )]
    message: Annotated[str, msgspec.Meta(
        description="For people; may change between releases.",
        examples=["no document 4f9c… here"],
    )]
    details: Annotated[Any | None, msgspec.Meta(
        description="Optional: the refused fields and why (validation errors).",
    )] = None


class ErrorBody(msgspec.Struct, kw_only=True):
    """The body of every error response."""

    error: Annotated[ErrorDetail, msgspec.Meta(description="What went wrong.")]


# Order matters only for documentation; lookup follows the exception's MRO.
_DOMAIN_STATUS: tuple[tuple[type[Exception], int, str], ...] = (
    (NotFound, 404, "not_found"),
    (Conflict, 409, "conflict"),
    (LegalHold, 409, "legal_hold"),
    (QuotaExceeded, 413, "quota_exceeded"),
    (PermissionDenied, 403, "permission_denied"),
    (AuthenticationFailed, 401, "authentication_failed"),
    (ValidationFailed, 422, "validation_failed"),
    (RateLimited, 429, "rate_limited"),
    (DomainError, 400, "bad_request"),
    (InvalidMessage, 400, "invalid_message"),
    (DependencyUnavailable, 503, "dependency_unavailable"),
    (TransientError, 503, "dependency_unavailable"),
)


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    details: Any | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response[ErrorBody]:
    """A JSON error in the shared shape."""
    body = ErrorBody(error=ErrorDetail(code=code, message=message, details=details))
    return Response(
        body, status_code=status, headers=dict(headers or {}), media_type=MediaType.JSON
    )


def _status_of(exc: Exception) -> tuple[int, str]:
    for cls in type(exc).__mro__:
        for known, status, code in _DOMAIN_STATUS:
            if cls is known:
                return status, code
    return 500, "internal_error"


def _domain_handler(_: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    status, code = _status_of(exc)
    headers: dict[str, str] = {}
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(int(retry_after))
    elif status == 503:
        headers["Retry-After"] = "1"
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if status >= 500:
        log.warning("request.dependency_unavailable", error=str(exc), error_type=type(exc).__name__)
    return error_response(status, code, str(exc), headers=headers)


def _validation_handler(_: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    assert isinstance(exc, ValidationException)
    return error_response(422, "validation_failed", "request validation failed", details=exc.extra)


def _http_handler(_: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    code = HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    headers = dict(exc.headers or {})
    return error_response(status, code, str(exc.detail), details=exc.extra or None, headers=headers)


def _internal_handler(_: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    log.error("request.unhandled_error", error_type=type(exc).__name__, exc_info=exc)
    return error_response(500, "internal_error", "internal server error")


UNAVAILABLE_SQLSTATE_CLASSES = ("08", "53", "57")
"""PostgreSQL error classes that mean "not now" rather than a bug: connection exceptions,
insufficient resources (too many connections) and operator intervention (``the database
system is shutting down`` / ``is starting up`` during a restart, which asyncpg reports
as a plain DBAPIError: a 500 under the cluster harness's PostgreSQL restart)."""


def _sqlstate(exc: sa_exc.DBAPIError) -> str:
    for error in (exc.orig, getattr(exc.orig, "__cause__", None)):
        code = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
        if code:
            return str(code)
    return ""


def _connection_lost_handler(
    request: Request[Any, Any, Any], exc: Exception
) -> Response[ErrorBody]:
    """A database (or other dependency) connection refused, dropped or timed out: 503, not
    a bug. Other database errors (integrity, syntax) stay 500."""
    if isinstance(exc, sa_exc.DBAPIError) and not (
        exc.connection_invalidated
        or isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError)
        or _sqlstate(exc).startswith(UNAVAILABLE_SQLSTATE_CLASSES)
    ):
        return _internal_handler(request, exc)
    log.warning("request.dependency_unavailable", error=str(exc)[:300],
                error_type=type(exc).__name__)
    return error_response(503, "dependency_unavailable", "a dependency is unavailable",
                          headers={"Retry-After": "1"})


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    **{cls: _domain_handler for cls, _, _ in _DOMAIN_STATUS},
    ValidationException: _validation_handler,
    HTTPException: _http_handler,
    OSError: _connection_lost_handler,
    sa_exc.DBAPIError: _connection_lost_handler,
    sa_exc.TimeoutError: _connection_lost_handler,
    Exception: _internal_handler,
}
"""Pass as ``exception_handlers=`` (``api_app`` does)."""

_DESCRIPTIONS = {
    400: "Bad request",
    401: "Missing, invalid, expired or revoked token or credentials",
    403: "Authenticated but not allowed",
    404: "Not found",
    409: "Conflicts with the current state",
    413: "Request body too large",
    422: "Invalid input",
    429: "Rate-limited; see Retry-After",
    503: "A dependency (database, Redis) is unavailable; see Retry-After",
}


LOCATION = ResponseHeader(
    name="Location", documentation_only=True, required=True,
    description="Where the created or accepted resource can be read (a path on this API).",
)
"""``response_headers=[LOCATION]`` on a 201/202 route that sets ``Location``."""

DEVICE_TOKEN_HEADER = "X-Device-Token"  # noqa: S105 - a header name, not a secret
"""A successful login answers with this header (a token for this account on this device); a
later login that sends it back counts as that device (its own failed-login delays). A header,
so that the login request and token bodies stay exactly the public contract's."""

DEVICE_TOKEN_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"  # noqa: S105 - a shape, not a secret
"""What a device token looks like; anything else is not sent on nor looked up."""

DEVICE_TOKEN_ISSUED = ResponseHeader(
    name=DEVICE_TOKEN_HEADER, documentation_only=True, required=False,
    description="Login only: keep it on this device for this account and send it back in "
    "the same header with its next login (valid LOGIN_DEVICE_TTL_S after its last use).",
)


def error_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI ``responses=`` documenting error statuses with the shared error body."""
    return {
        status: ResponseSpec(
            data_container=ErrorBody, description=_DESCRIPTIONS.get(status, "Error"),
            generate_examples=False,
        )
        for status in statuses
    }


# --- correlation ids, trace context, access log ---------------------------------------------
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


# --- health and readiness ----------------------------------------------------------------------
ReadyCheck = Callable[[], Awaitable[object]]


class HealthBody(msgspec.Struct, kw_only=True):
    status: Literal["ok"]
    """Always ``ok``: the process answers."""


class ReadyBody(msgspec.Struct, kw_only=True):
    status: Literal["ready", "unavailable"]
    """``unavailable`` when any check failed (the answer is then a 503)."""
    checks: dict[str, str]
    """Dependency -> ``ok`` or the reason it failed."""


def database_check(engine: AsyncEngine) -> ReadyCheck:
    async def check() -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    return check


def redis_check(redis: Any) -> ReadyCheck:
    async def check() -> None:
        await redis.ping()

    return check


async def run_checks(checks: Mapping[str, ReadyCheck], timeout_s: float = 2.0) -> ReadyBody:
    """Run every check concurrently, each bounded by ``timeout_s``."""

    async def one(name: str, check: ReadyCheck) -> str:
        try:
            await asyncio.wait_for(check(), timeout_s)
        except TimeoutError:
            log.warning("ready.check_failed", check=name, error="timeout")
            return "error: timeout"
        except Exception as exc:
            # The log gets the driver's text; the answer only the kind of failure, never the
            # host names, ports and user names that text carries.
            log.warning("ready.check_failed", check=name, error=str(exc)[:300],
                        error_type=type(exc).__name__)
            return f"error: {type(exc).__name__}"
        return "ok"

    results = await asyncio.gather(*(one(n, c) for n, c in checks.items()))
    ok = all(r == "ok" for r in results)
    return ReadyBody(
        status="ready" if ok else "unavailable", checks=dict(zip(checks, results, strict=True))
    )


def health_routes(checks: Mapping[str, ReadyCheck]) -> list[HTTPRouteHandler]:
    """``GET /health`` (process alive) and ``GET /ready`` (dependencies reachable)."""

    @get(
        "/health", operation_id="getHealth", tags=["ops"], summary="Process is alive",
        sync_to_thread=False,
    )
    def health() -> HealthBody:
        """Answers while the process runs; checks nothing else (a liveness probe)."""
        return HealthBody(status="ok")

    @get(
        "/ready", operation_id="getReady", tags=["ops"], summary="Dependencies are reachable",
        responses={503: ResponseSpec(
            ReadyBody, description="A dependency is unreachable", generate_examples=False
        )},
    )
    async def ready() -> Response[ReadyBody]:
        """200 when every dependency (database, Redis) answers within 2 s, else 503 with
        the reason per dependency (a readiness probe)."""
        body = await run_checks(checks)
        return Response(body, status_code=200 if body.status == "ready" else 503)

    return [health, ready]


# --- metrics -------------------------------------------------------------------------------
class MetricsController(PrometheusController):
    """``GET /metrics``: Prometheus text of this process (requests by route template, status)."""

    path = "/metrics"
    include_in_schema = False


def metrics_config(title: str) -> PrometheusConfig:
    """Request count and latency per method, route template and status; ops routes excluded."""
    app_name = re.sub(r"[^a-z0-9_]", "_", title.lower())
    return PrometheusConfig(
        app_name=app_name, prefix="ams_http", group_path=True,
        exclude=["^/metrics$", "^/health$", "^/ready$"],
    )


# --- the app -------------------------------------------------------------------------------
def api_app(
    *,
    title: str,
    version: str = "1.0.0",
    route_handlers: Sequence[Any],
    ready_checks: Mapping[str, ReadyCheck],
    max_body_bytes: int,
    description: str | None = None,
    body_timeout_s: float = 120.0,
    **litestar_kwargs: Any,
) -> Litestar:
    """A Litestar app with the shared errors, correlation ids, health, /metrics, limits and
    /schema."""
    openapi = OpenAPIConfig(
        title=title, version=version, description=description, path="/schema",
        use_handler_docstrings=True,
        render_plugins=[SwaggerRenderPlugin()], components=[bearer_components()],
    )
    middleware = [metrics_config(title).middleware, *litestar_kwargs.pop("middleware", [])]
    app = Litestar(
        route_handlers=[*health_routes(ready_checks), MetricsController, *route_handlers],
        exception_handlers={**EXCEPTION_HANDLERS, **litestar_kwargs.pop("exception_handlers", {})},
        middleware=middleware,
        openapi_config=openapi,
        request_max_body_size=max_body_bytes,
        **observability(title, **litestar_kwargs),
    )
    # The served OpenAPI document and OPTIONS answers say what the API does (shared.contract).
    app.asgi_handler = contract.allow_header_middleware(app.asgi_handler, app)
    app.asgi_handler = body_deadline_middleware(app.asgi_handler, body_timeout_s)
    app.on_startup.append(contract.openapi_document)
    return observed(app)


def body_deadline_middleware(app: ASGIApp, timeout_s: float) -> ASGIApp:
    """A request body must arrive within ``timeout_s`` of the request's start, or the answer
    is 408: a client trickling a large upload a byte at a time would otherwise hold a
    connection and a request for as long as it likes (uvicorn has no body timeout). Once
    the body is complete, ``receive`` is passed through untimed (disconnect detection)."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        complete = False

        async def timed_receive() -> ReceiveMessage:
            nonlocal complete
            if complete:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.0))
            except TimeoutError:
                raise HTTPException(
                    status_code=408,
                    detail=f"the request body did not arrive within {timeout_s:g} s",
                ) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                complete = True
            return message

        await app(scope, timed_receive, send)

    return middleware


def observability(title: str, **litestar_kwargs: Any) -> dict[str, Any]:
    """``Litestar(**observability(title, **kwargs))``: the caller's keyword arguments plus
    the OpenTelemetry plugin (when tracing is on) and no logging config of Litestar's own,
    whose plain-text handlers would break the JSON lines (``shared.logging`` renders every
    record, Litestar's too). Pair it with :func:`observed`."""
    return {
        **litestar_kwargs,
        "plugins": [*tracing.http_plugins(title), *litestar_kwargs.get("plugins", [])],
        "logging_config": litestar_kwargs.get("logging_config"),
    }


def observed(app: Litestar) -> Litestar:
    """Wrap the whole app, outside Litestar's router and exception handling (and its
    OpenTelemetry middleware): every request, an unknown route too, gets its correlation id,
    its trace context and one access line."""
    app.asgi_handler = correlation_middleware(app.asgi_handler)
    return app


__all__ = [
    "EXCEPTION_HANDLERS",
    "LOCATION",
    "NO_NUL",
    "ErrorBody",
    "api_app",
    "correlation_middleware",
    "database_check",
    "error_response",
    "error_responses",
    "health_routes",
    "observability",
    "observed",
    "redis_check",
    "run_checks",
]
