"""The admin console: ``create_app(settings)`` wires sessions, the API client, authdb (sagas,
audit trail), the dead-letter and outbox operations and the metrics history."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from litestar import Litestar

from frontends.bff.api import ApiClient
from frontends.bff.app import build_frontend, frontend_app
from frontends.bff.session import SessionStore
from frontends.console.charts import MetricsHistory, parse_targets
from frontends.console.controllers import (
    AuditController,
    DeadLettersController,
    DocumentsController,
    OutboxController,
    OverviewController,
    SagasController,
    SignIn,
)
from frontends.console.services import Operations
from shared.config import Settings
from shared.db import create_engine, session_factory
from shared.http import database_check, redis_check

TEMPLATES = Path(__file__).resolve().parent / "templates"
FORM_MAX_BYTES = 64 * 1024


def create_app(settings: Settings, *, api: ApiClient | None = None,
               store: SessionStore | None = None) -> Litestar:
    """The console app; ``api`` and ``store`` may be fakes (tests), else built from settings."""
    authdb = create_engine(settings.database.auth_url, pool_size=2)
    # The audit table may sit behind a role of its own (AUDIT_DATABASE_URL): read it there.
    auditdb = create_engine(settings.database.audit_url, pool_size=2)
    frontend, redis = build_frontend("console", "Operations console", settings, api, store)
    history = MetricsHistory(parse_targets(settings.frontends.console_metrics_targets),
                             settings.frontends.console_scrape_interval_s)
    tasks: list[asyncio.Task[None]] = []
    # Built here, connecting to nothing: its broker connection opens at the first page.
    operations = Operations(settings, session_factory(authdb), audit=session_factory(auditdb))

    async def start(app: Litestar) -> None:
        app.state["operations"] = operations
        app.state["metrics_history"] = history
        tasks.append(asyncio.create_task(history.run(), name="console-metrics"))

    async def stop() -> None:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await operations.close()
        await authdb.dispose()
        await auditdb.dispose()
        await redis.aclose()

    return frontend_app(
        frontend,
        route_handlers=[SignIn, OverviewController, DocumentsController,
                        SagasController, DeadLettersController, OutboxController,
                        AuditController],
        template_dirs=[TEMPLATES],
        ready_checks={"redis": redis_check(redis), "authdb": database_check(authdb)},
        max_body_bytes=FORM_MAX_BYTES,
        on_startup=[start],
        on_shutdown=[stop],
    )
