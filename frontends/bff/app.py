"""The Litestar app of a frontend: templates, static files, security headers, CSRF, error pages,
health, readiness, metrics and correlation ids (the same ops surface as the APIs)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from jinja2 import Environment, FileSystemLoader, select_autoescape
from litestar import Litestar, Request
from litestar.contrib.jinja import JinjaTemplateEngine
from litestar.datastructures import State
from litestar.enums import ScopeType
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from frontends.bff.api import ApiClient
from frontends.bff.core import STATE_KEY, Frontend, frontend_of
from frontends.bff.errors import EXCEPTION_HANDLERS
from frontends.bff.session import RedisSessionStore, SessionStore
from shared.config import Settings
from shared.http import (
    MetricsController,
    ReadyCheck,
    health_routes,
    observability,
    observed,
)
from shared.http import metrics_config as http_metrics_config
from shared.redis_client import create_redis
from shared.tls import client_context

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
TEMPLATES_DIR = HERE / "templates"
OPS_PATHS = ("/health", "/ready", "/metrics", "/static/")

CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
    "base-uri 'none'",
))
"""No inline script or style anywhere: the pages load /static files only."""

SECURITY_HEADERS = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
    (b"cross-origin-opener-policy", b"same-origin"),
)


def security_headers_middleware(app: ASGIApp) -> ASGIApp:
    """Security headers on every response; pages (not static files) are never cached."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        cacheable = str(scope.get("path", "")).startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0] != b"cache-control"
                           or cacheable]
                headers.extend(SECURITY_HEADERS)
                if not cacheable:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await app(scope, receive, send_with_headers)

    return middleware


LIVE_HEADER = "x-live"
"""Sent by /static/live.js: a fragment poll, which must not consume a one-time notice (nor
must the upload script's request, whose page is loaded right after it)."""


async def _before_request(request: Request[Any, Any, Any]) -> None:
    """CSRF on every state-changing request; a page view shows a pending notice and keeps
    the session alive (fragment polls do neither: an open tab is not activity)."""
    if request.url.path.startswith(OPS_PATHS):
        return
    frontend = frontend_of(request)
    await frontend.check_csrf(request)
    background = LIVE_HEADER in request.headers or "x-requested-with" in request.headers
    if request.method == "GET" and not background:
        await frontend.page_view(request)


def _ago(value: Any) -> str:
    moment = _as_datetime(value)
    if moment is None:
        return "-"
    seconds = (datetime.now(UTC) - moment).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{max(0, seconds):.0f} s ago"


def _when(value: Any) -> str:
    moment = _as_datetime(value)
    return "-" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _as_datetime(value: Any) -> datetime | None:
    """A datetime, ISO-8601 text (from an API) or epoch seconds, as aware UTC."""
    moment: datetime | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        moment = datetime.fromtimestamp(value, UTC)
    elif isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and value:
        with contextlib.suppress(ValueError):
            moment = datetime.fromisoformat(value)
    if moment is not None and moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment


def _filesize(value: Any) -> str:
    size = float(value or 0)
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def _polygon(bbox: Any) -> str:
    """SVG ``points`` of a box given as four ``[x, y]`` corners or as ``[x0, y0, x1, y1]``."""
    if isinstance(bbox, list | tuple) and len(bbox) == 4 and all(
        isinstance(v, int | float) for v in bbox
    ):
        x0, y0, x1, y1 = bbox
        bbox = [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]
    return " ".join(f"{p[0]},{p[1]}" for p in bbox or ())


def template_engine(directories: Sequence[Path]) -> JinjaTemplateEngine:
    """Jinja with autoescaping; the app's own templates first, then the shared ones."""
    env = Environment(
        loader=FileSystemLoader([*map(str, directories), str(TEMPLATES_DIR)]),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True, lstrip_blocks=True,
    )
    env.filters.update(ago=_ago, when=_when, filesize=_filesize, polygon=_polygon)
    return JinjaTemplateEngine.from_environment(env)


def build_frontend(name: str, title: str, settings: Settings, api: ApiClient | None = None,
                   store: SessionStore | None = None) -> tuple[Frontend, aioredis.Redis]:
    """A frontend's session store (Redis, its own key prefix) and API client (three APIs);
    tests may pass fakes."""
    redis = create_redis(settings.redis.url)
    frontend = Frontend(
        name=name, title=title, settings=settings,
        store=store or RedisSessionStore(redis, prefix=f"{settings.redis.key_prefix}{name}:"),
        api=api or ApiClient(
            {"auth": settings.frontends.auth_api_url, "users": settings.frontends.users_api_url,
             "admin": settings.frontends.admin_api_url},
            timeout_s=settings.frontends.api_timeout_s,
            verify=client_context(settings.tls.ca_file),
        ),
    )
    return frontend, redis


def frontend_app(
    frontend: Frontend,
    *,
    route_handlers: Sequence[Any],
    template_dirs: Sequence[Path],
    ready_checks: dict[str, ReadyCheck],
    max_body_bytes: int,
    on_startup: Sequence[Callable[[Litestar], Any]] = (),
    on_shutdown: Sequence[Callable[[], Any]] = (),
) -> Litestar:
    """A frontend app: the shared machinery around the frontend's own controllers."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        for start in on_startup:
            await start(app)
        try:
            yield
        finally:
            for stop in on_shutdown:
                await stop()
            await frontend.api.aclose()

    # A request log line per API call would drown the structured logs; errors are logged.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    title = f"ai-micro-service {frontend.name}"
    # Correlation ids, trace context, access lines, JSON logs, spans: as the APIs have them.
    return observed(Litestar(**observability(
        title,
        route_handlers=[
            *health_routes(ready_checks), MetricsController,
            create_static_files_router(path="/static", directories=[STATIC_DIR],
                                       include_in_schema=False),
            *route_handlers,
        ],
        middleware=[security_headers_middleware, http_metrics_config(title).middleware],
        before_request=_before_request,
        exception_handlers=EXCEPTION_HANDLERS,
        template_config=TemplateConfig(instance=template_engine(template_dirs)),
        request_max_body_size=max_body_bytes,
        lifespan=[lifespan],
        state=State({STATE_KEY: frontend}),
        openapi_config=None,
    )))
