"""The admin console: ``create_app(settings)`` wires sessions, the API client, authdb (sagas,
audit trail), the dead-letter and outbox operations and the metrics history."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from litestar import Litestar

from frontends.bff.api import ApiClient
from frontends.bff.app import frontend_app
from frontends.bff.core import Frontend
from frontends.bff.session import RedisSessionStore
from frontends.console.charts import MetricsHistory, parse_targets
from frontends.console.controllers import (
    AuditController,
    DeadLettersController,
    DocumentsController,
    OutboxController,
    OverviewController,
    SagasController,
    SignInController,
)
from frontends.console.services import Operations
from shared.config import Settings
from shared.db import create_engine, session_factory
from shared.http import database_check, redis_check
from shared.redis_client import create_redis

TEMPLATES = Path(__file__).resolve().parent / "templates"
FORM_MAX_BYTES = 64 * 1024


def create_app(settings: Settings, *, api: ApiClient | None = None) -> Litestar:
    """The console app. ``api`` may be injected (tests); otherwise the API URLs from settings."""
    redis = create_redis(settings.redis_url)
    authdb = create_engine(settings.auth_database_url, pool_size=2)
    frontend = Frontend(
        name="console", title="Operations console", settings=settings,
        store=RedisSessionStore(redis, prefix=f"{settings.redis_key_prefix}console:"),
        api=api or ApiClient(
            {"auth": settings.auth_api_url, "users": settings.users_api_url,
             "admin": settings.admin_api_url},
            timeout_s=settings.frontend_api_timeout_s,
        ),
    )
    history = MetricsHistory(parse_targets(settings.console_metrics_targets),
                             settings.console_scrape_interval_s)
    tasks: list[asyncio.Task[None]] = []

    async def start(app: Litestar) -> None:
        app.state["operations"] = Operations(settings, session_factory(authdb))
        app.state["metrics_history"] = history
        tasks.append(asyncio.create_task(history.run(), name="console-metrics"))

    async def stop() -> None:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await authdb.dispose()
        await redis.aclose()

    return frontend_app(
        frontend,
        route_handlers=[SignInController, OverviewController, DocumentsController,
                        SagasController, DeadLettersController, OutboxController,
                        AuditController],
        template_dirs=[TEMPLATES],
        ready_checks={"redis": redis_check(redis), "authdb": database_check(authdb)},
        max_body_bytes=FORM_MAX_BYTES,
        on_startup=[start],
        on_shutdown=[stop],
    )
