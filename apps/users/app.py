"""Composition root of the users API: ``create_app(settings, ...)``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from litestar import Litestar
from litestar.datastructures import State
from sqlalchemy.ext.asyncio import AsyncEngine

from apps.users.cache import ProfileCache, RedisProfileCache
from apps.users.controllers import ProfileController
from apps.users.services import ProfileService
from shared.auth import VERIFIER_STATE, JwksSource, build_verifier
from shared.config import Settings
from shared.db import create_engine, session_factory
from shared.http import api_app, database_check, redis_check
from shared.redis_client import create_redis


def create_app(
    settings: Settings,
    *,
    engine: AsyncEngine | None = None,
    redis: aioredis.Redis | None = None,
    cache_redis: aioredis.Redis | None = None,
    cache: ProfileCache | None = None,
    jwks_source: JwksSource | None = None,
) -> Litestar:
    """The users API. ``redis`` holds the denylist (fail closed); ``cache_redis`` the
    profile cache (fail open) and defaults to the same server."""
    db = settings.database
    engine = engine or create_engine(db.users_url, pool_size=db.pool_size)
    redis = redis or create_redis(settings.redis.url)
    cache_redis = cache_redis or redis
    cache = cache or RedisProfileCache(
        cache_redis, prefix=settings.redis.key_prefix, ttl_s=settings.profiles.cache_ttl_s
    )
    service = ProfileService(
        session_factory(engine), cache, retry_after_s=settings.profiles.retry_after_s
    )
    verifier = build_verifier(settings, redis, jwks_source)

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await redis.aclose()
            if cache_redis is not redis:
                await cache_redis.aclose()
            await engine.dispose()

    return api_app(
        title="ai-micro-service users",
        description="User profiles (created by the profiles worker after registration).",
        route_handlers=[ProfileController],
        ready_checks={"database": database_check(engine), "redis": redis_check(redis)},
        max_body_bytes=settings.http.request_max_body_bytes,
        body_timeout_s=settings.http.request_body_timeout_s,
        lifespan=[lifespan],
        state=State({"profile_service": service, VERIFIER_STATE: verifier}),
    )
