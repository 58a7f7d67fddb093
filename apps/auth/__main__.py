"""``python -m apps.auth``: run the auth service on AUTH_PORT (8002)."""

from __future__ import annotations

import uvicorn

from apps.auth.app import create_app
from shared.config import Settings
from shared.logging import configure_logging


def main() -> None:
    settings = Settings.from_env()
    configure_logging(settings, service="auth")
    uvicorn.run(
        create_app(settings),
        host=settings.http_host,
        port=settings.auth_port,
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
