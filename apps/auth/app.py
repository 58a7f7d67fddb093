"""Composition root of the auth service: ``create_app(settings, ...)``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from litestar import Litestar
from litestar.datastructures import State
from sqlalchemy.ext.asyncio import AsyncEngine

from apps.auth.controllers import AuthController, jwks
from apps.auth.keys import KeyEncryptionError, KeyRing, KeySealer, KeyStore
from apps.auth.login_delays import Ceilings, DelayRule, LoginLimiter
from apps.auth.passwords import Argon2Passwords
from apps.auth.services import AuthService
from apps.auth.stores import RedisKnownDevices, RedisLimitCounters, RedisSessions
from apps.auth.tokens import TokenIssuer
from shared.auth import VERIFIER_STATE, JwksCache, RedisRevocations, TokenVerifier
from shared.config import Settings, TokenSettings
from shared.db import create_engine, session_factory
from shared.http import api_app, database_check, redis_check
from shared.logging import get_logger
from shared.redis_client import create_redis

log = get_logger(__name__)


def key_sealer(settings: TokenSettings) -> KeySealer:
    """The sealer of the signing keys; :class:`KeyEncryptionError` without a usable KEK."""
    try:
        return KeySealer(settings.signing_kek())
    except ValueError as exc:  # SIGNING_KEY_KEK_FILE unreadable
        raise KeyEncryptionError(str(exc)) from exc


def create_app(
    settings: Settings,
    *,
    engine: AsyncEngine | None = None,
    redis: aioredis.Redis | None = None,
    passwords: Argon2Passwords | None = None,
) -> Litestar:
    """The auth API; collaborators default to the real ones built from ``settings``."""
    db = settings.database
    engine = engine or create_engine(db.auth_url, pool_size=db.pool_size)
    redis = redis or create_redis(settings.redis.url)
    passwords = passwords or Argon2Passwords.from_settings(settings.passwords)
    sessions = session_factory(engine)
    store = KeyStore(sessions, key_sealer(settings.tokens))
    ring = KeyRing(store, ttl_s=settings.tokens.signing_key_cache_s)
    # The auth service verifies its own tokens from its key ring, not over HTTP.
    verifier = TokenVerifier(
        JwksCache(ring, ttl_s=settings.tokens.signing_key_cache_s, min_refetch_interval_s=1.0),
        RedisRevocations(redis, prefix=settings.redis.key_prefix),
        issuer=settings.tokens.issuer,
        audience=settings.tokens.audience,
    )
    service = AuthService(
        sessions,
        passwords,
        TokenIssuer(
            ring,
            issuer=settings.tokens.issuer,
            audience=settings.tokens.audience,
            access_ttl_s=settings.tokens.access_token_ttl_s,
        ),
        verifier,
        RedisSessions(redis, prefix=settings.redis.key_prefix),
        login_limiter(redis, settings),
        refresh_ttl_s=settings.tokens.refresh_token_ttl_s,
        saga_step_timeout_s=settings.saga.step_timeout_s,
        saga_watch_ttl_s=settings.saga.watch_ttl_s,
        refresh_reuse_grace_s=settings.tokens.refresh_reuse_grace_s,
        devices=RedisKnownDevices(
            redis, prefix=settings.redis.key_prefix, ttl_s=settings.login.device_ttl_s
        ),
    )

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        try:
            if sealed := await store.seal_clear_rows():
                log.warning("signing_keys_encrypted", count=sealed)
            await store.ensure_one()
            await store.live()  # a wrong SIGNING_KEY_KEK stops the start, not a login later
        except KeyEncryptionError as exc:
            log.critical("signing_keys_unusable", error=str(exc))
            raise
        try:
            yield
        finally:
            passwords.close()
            await redis.aclose()
            await engine.dispose()

    return api_app(
        title="ai-micro-service auth",
        description="Registration, login, token rotation and revocation, JWKS.",
        route_handlers=[AuthController, jwks],
        ready_checks={"database": database_check(engine), "redis": redis_check(redis)},
        max_body_bytes=settings.http.request_max_body_bytes,
        body_timeout_s=settings.http.request_body_timeout_s,
        lifespan=[lifespan],
        state=State({"auth_service": service, "key_ring": ring, VERIFIER_STATE: verifier}),
    )


def login_limiter(redis: aioredis.Redis, settings: Settings) -> LoginLimiter:
    """Growing delays per (account, client) and the fixed-window ceilings, in Redis."""
    return LoginLimiter(
        RedisLimitCounters(redis, prefix=settings.redis.key_prefix),
        DelayRule(
            free_failures=settings.login.max_failures_per_account,
            base_s=settings.login.delay_base_s,
            max_s=settings.login.delay_max_s,
            memory_s=settings.login.delay_memory_s,
        ),
        Ceilings(
            window_s=settings.login.window_s,
            attempts_per_address=settings.login.max_attempts_per_client,
            failures_per_account=settings.login.max_failures_per_account_all,
            registrations_per_address=settings.login.register_max_per_client,
        ),
    )
