"""``python -m apps.<name>``: the one way every API process starts (settings, logs, uvicorn)."""

from __future__ import annotations

from collections.abc import Callable

import uvicorn
from litestar import Litestar

from shared.config import Settings, refuse, settings_or_exit
from shared.logging import configure_logging
from shared.tls import TlsConfigError
from shared.tracing import configure_tracing


def serve(
    create_app: Callable[[Settings], Litestar],
    *,
    service: str,
    port: Callable[[Settings], int],
    graceful_shutdown_s: int = 5,
) -> None:
    """Build :class:`Settings` from the environment, configure logs, run the app on
    ``settings.http.host`` and ``port(settings)`` (https with ``HTTP_TLS_CERT_FILE``).

    uvicorn's own access log stays off: ``shared.http`` writes one structured access line
    per request (with its route template, correlation id and trace id).
    """
    settings = settings_or_exit(service)
    configure_logging(settings.observability, service=service)
    configure_tracing(settings.observability, service=service)
    try:
        app = create_app(settings)
    except TlsConfigError as exc:  # plain-http JWKS to another host, say
        refuse(service, exc)
    uvicorn.run(
        app,
        host=settings.http.host,
        port=port(settings),
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=graceful_shutdown_s,
        # X-Forwarded-For only from TRUSTED_PROXIES (one setting with the others, checked and
        # documented; uvicorn's own FORWARDED_ALLOW_IPS is not read).
        proxy_headers=bool(settings.http.trusted_proxies),
        forwarded_allow_ips=settings.http.trusted_proxies or "",
        ssl_certfile=settings.http.tls_cert_file or None,
        ssl_keyfile=settings.http.tls_key_file or None,
    )

