"""``python -m apps.<name>``: the one way every API process starts (settings, logs, uvicorn)."""

from __future__ import annotations

from collections.abc import Callable

import uvicorn
from litestar import Litestar

from shared.config import Settings
from shared.logging import configure_logging
from shared.tracing import configure_tracing


def serve(
    create_app: Callable[[Settings], Litestar],
    *,
    service: str,
    port: Callable[[Settings], int],
    graceful_shutdown_s: int = 5,
) -> None:
    """Build :class:`Settings` from the environment, configure logs, run the app on
    ``settings.http_host`` and ``port(settings)``.

    uvicorn's own access log stays off: ``shared.http`` writes one structured access line
    per request (with its route template, correlation id and trace id).
    """
    settings = Settings.from_env()
    configure_logging(settings, service=service)
    configure_tracing(settings, service=service)
    uvicorn.run(
        create_app(settings),
        host=settings.http_host,
        port=port(settings),
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=graceful_shutdown_s,
    )
