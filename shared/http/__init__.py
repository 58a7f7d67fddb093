"""Litestar pieces every API shares: JSON errors, correlation ids, health, readiness, metrics.

Errors always have one shape, ``{"error": {"code", "message", "details"?}}``, whatever
raised them: a domain error from a service, a Litestar validation error, an unknown
route, a body that is too large, or a bug (500, never a stack trace). Services raise
:mod:`shared.errors`; this package maps them to HTTP once.

The package: :mod:`~shared.http.app` (the app factory :func:`api_app`, and the
observability any Litestar app wears), :mod:`~shared.http.errors` (the error shape and the
exception handlers), :mod:`~shared.http.openapi` (what routes document: error responses,
headers, request text shapes), :mod:`~shared.http.access` (correlation ids, trace context,
the access log), :mod:`~shared.http.health` (``/health``, ``/ready`` and their checks),
:mod:`~shared.http.metrics` (``/metrics``) and :mod:`~shared.http.limits` (the request
body deadline). Import from here.
"""

from shared.http.access import CORRELATION_HEADER, correlation_middleware
from shared.http.app import api_app, observability, observed
from shared.http.errors import (
    EXCEPTION_HANDLERS,
    UNAVAILABLE_SQLSTATE_CLASSES,
    ErrorBody,
    ErrorDetail,
    error_response,
)
from shared.http.health import (
    HealthBody,
    ReadyBody,
    ReadyCheck,
    database_check,
    health_routes,
    redis_check,
    run_checks,
)
from shared.http.limits import body_deadline_middleware
from shared.http.metrics import MetricsController, metrics_config
from shared.http.openapi import (
    DEVICE_TOKEN_HEADER,
    DEVICE_TOKEN_ISSUED,
    DEVICE_TOKEN_PATTERN,
    LOCATION,
    NO_NUL,
    error_responses,
)

__all__ = [
    "CORRELATION_HEADER",
    "DEVICE_TOKEN_HEADER",
    "DEVICE_TOKEN_ISSUED",
    "DEVICE_TOKEN_PATTERN",
    "EXCEPTION_HANDLERS",
    "LOCATION",
    "NO_NUL",
    "UNAVAILABLE_SQLSTATE_CLASSES",
    "ErrorBody",
    "ErrorDetail",
    "HealthBody",
    "MetricsController",
    "ReadyBody",
    "ReadyCheck",
    "api_app",
    "body_deadline_middleware",
    "correlation_middleware",
    "database_check",
    "error_response",
    "error_responses",
    "health_routes",
    "metrics_config",
    "observability",
    "observed",
    "redis_check",
    "run_checks",
]
