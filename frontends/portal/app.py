"""The user portal: ``create_app(settings)`` wires the session store, the API client and pages."""

from __future__ import annotations

from pathlib import Path

from litestar import Litestar

from frontends.bff.api import ApiClient
from frontends.bff.app import build_frontend, frontend_app
from frontends.bff.session import SessionStore
from frontends.portal.controllers import (
    DeletionController,
    DocumentsController,
    HomeController,
    ProfileController,
    RegisterController,
    SignIn,
)
from shared.config import Settings
from shared.http import redis_check

TEMPLATES = Path(__file__).resolve().parent / "templates"
MULTIPART_OVERHEAD = 64 * 1024
"""Room for the multipart boundaries and the CSRF field on top of ``UPLOAD_MAX_BYTES``."""


def create_app(settings: Settings, *, api: ApiClient | None = None,
               store: SessionStore | None = None) -> Litestar:
    """The portal app; ``api`` and ``store`` may be fakes (tests), else built from settings."""
    frontend, redis = build_frontend("portal", "Documents portal", settings, api, store)
    return frontend_app(
        frontend,
        route_handlers=[HomeController, SignIn, RegisterController, ProfileController,
                        DocumentsController, DeletionController],
        template_dirs=[TEMPLATES],
        ready_checks={"redis": redis_check(redis)},
        max_body_bytes=settings.uploads.max_bytes + MULTIPART_OVERHEAD,
        on_shutdown=[redis.aclose],
    )
