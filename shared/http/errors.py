"""Errors in one shape, ``{"error": {"code", "message", "details"?}}``, whatever raised
them: a domain error from a service (:mod:`shared.errors`, mapped to HTTP here once), a
Litestar validation error, an unknown route, a body that is too large, a dependency that
is unavailable (503), or a bug (500, never a stack trace)."""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Annotated, Any

import msgspec
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.types import ExceptionHandlersMap
from sqlalchemy import exc as sa_exc

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

log = get_logger("shared.http")
"""The package's name: its log lines are the same as before it was split."""


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
