"""The user portal: ``create_app(settings)`` wires the session store, the API client and pages."""

from __future__ import annotations

from pathlib import Path

from litestar import Litestar

from frontends.bff.api import ApiClient
from frontends.bff.app import frontend_app
from frontends.bff.core import Frontend
from frontends.bff.session import RedisSessionStore
from frontends.portal.controllers import (
    AccountController,
    DeletionController,
    DocumentsController,
    ProfileController,
)
from shared.config import Settings
from shared.http import redis_check
from shared.redis_client import create_redis

TEMPLATES = Path(__file__).resolve().parent / "templates"
MULTIPART_OVERHEAD = 64 * 1024
"""Room for the multipart boundaries and the CSRF field on top of ``UPLOAD_MAX_BYTES``."""


def create_app(settings: Settings, *, api: ApiClient | None = None) -> Litestar:
    """The portal app. ``api`` may be injected (tests); otherwise the API URLs from settings."""
    redis = create_redis(settings.redis_url)
    frontend = Frontend(
        name="portal", title="Documents portal", settings=settings,
        store=RedisSessionStore(redis, prefix=f"{settings.redis_key_prefix}portal:"),
        api=api or ApiClient(
            {"auth": settings.auth_api_url, "users": settings.users_api_url,
             "admin": settings.admin_api_url},
            timeout_s=settings.frontend_api_timeout_s,
        ),
    )
    return frontend_app(
        frontend,
        route_handlers=[AccountController, ProfileController, DocumentsController,
                        DeletionController],
        template_dirs=[TEMPLATES],
        ready_checks={"redis": redis_check(redis)},
        max_body_bytes=settings.upload_max_bytes + MULTIPART_OVERHEAD,
        on_shutdown=[redis.aclose],
    )
