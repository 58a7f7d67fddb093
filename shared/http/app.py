"""The app factory (:func:`api_app`) and the observability any Litestar app of the project
wears (:func:`observability`, :func:`observed`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from litestar import Litestar
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin

from shared import contract, tracing
from shared.auth import bearer_components
from shared.http.access import correlation_middleware
from shared.http.errors import EXCEPTION_HANDLERS
from shared.http.health import ReadyCheck, health_routes
from shared.http.limits import body_deadline_middleware
from shared.http.metrics import MetricsController, metrics_config


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
