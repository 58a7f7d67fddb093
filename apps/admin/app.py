"""The admin API: ``create_app(settings)`` wires the database, token verifier and limits."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Request, Response
from litestar.datastructures import State
from litestar.di import Provide
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from apps.admin.audit_trail import AuditTrail
from apps.admin.controllers import DocumentController
from apps.admin.limits import RedisUploadLimit
from apps.admin.services import UploadLimits
from shared.auth import VERIFIER_STATE, TokenVerifier, build_verifier
from shared.config import Settings
from shared.db import create_engine, session_factory
from shared.documents import Inspector
from shared.errors import PayloadTooLarge, UnsupportedMediaType
from shared.http import ErrorBody, api_app, database_check, error_response, redis_check
from shared.redis_client import create_redis

MULTIPART_OVERHEAD = 64 * 1024
"""Room for multipart boundaries and headers on top of ``UPLOAD_MAX_BYTES``."""


def _status_handler(status: int, code: str) -> Any:
    def handler(_: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
        return error_response(status, code, str(exc))

    return handler


def create_app(settings: Settings, *, verifier: TokenVerifier | None = None) -> Litestar:
    """The admin app. ``verifier`` may be injected (tests); otherwise JWKS + Redis from settings."""
    engine = create_engine(settings.database.admin_url, pool_size=settings.database.pool_size)
    audit_engine = create_engine(settings.database.audit_url, pool_size=2)
    audit_trail = AuditTrail(session_factory(audit_engine))
    sessions = session_factory(engine)
    redis = create_redis(settings.redis.url)
    limits = UploadLimits.from_settings(settings)
    inspector = Inspector(settings.uploads.inspect_threads)
    upload_rate = RedisUploadLimit(redis, prefix=settings.redis.key_prefix,
                                   per_minute=settings.uploads.max_per_minute)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        app.state[VERIFIER_STATE] = verifier or build_verifier(settings, redis)
        try:
            yield
        finally:
            await engine.dispose()
            await audit_engine.dispose()
            inspector.close()
            await redis.aclose()

    checks = {"admindb": database_check(engine)}
    if verifier is None:
        checks["redis"] = redis_check(redis)
    return api_app(
        title="ai-micro-service admin API",
        description="Documents in, OCR text out.",
        route_handlers=[DocumentController],
        ready_checks=checks,
        max_body_bytes=settings.uploads.max_bytes + MULTIPART_OVERHEAD,
        body_timeout_s=settings.http.request_body_timeout_s,
        dependencies={
            "db_session": Provide(_session_provider(sessions)),
            "upload_limits": Provide(lambda: limits, sync_to_thread=False),
            "inspector": Provide(lambda: inspector, sync_to_thread=False),
            "upload_rate": Provide(lambda: upload_rate, sync_to_thread=False),
            "audit_trail": Provide(lambda: audit_trail, sync_to_thread=False),
        },
        exception_handlers={
            PayloadTooLarge: _status_handler(413, "payload_too_large"),
            UnsupportedMediaType: _status_handler(415, "unsupported_media_type"),
        },
        lifespan=[lifespan],
        state=State({}),
    )


def _session_provider(sessions: async_sessionmaker[AsyncSession]) -> Any:
    async def provide() -> AsyncIterator[AsyncSession]:
        """One transaction per request: committed when the handler returns, else rolled back."""
        async with sessions() as session, session.begin():
            yield session

    return provide
