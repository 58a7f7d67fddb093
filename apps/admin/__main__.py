"""``python -m apps.admin``: the admin API on ``ADMIN_PORT`` (8003)."""

from __future__ import annotations

import uvicorn

from apps.admin.app import create_app
from shared.config import Settings
from shared.logging import configure_logging


def main() -> None:
    settings = Settings.from_env()
    configure_logging(settings, service="admin")
    uvicorn.run(
        create_app(settings), host=settings.http_host, port=settings.admin_port,
        log_config=None, timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
