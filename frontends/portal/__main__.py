"""``python -m frontends.portal``: run the user portal on PORTAL_PORT (3002)."""

from __future__ import annotations

from frontends.portal.app import create_app
from shared.serve import serve


def main() -> None:
    serve(
        create_app, service="portal", port=lambda s: s.frontends.portal_port,
        graceful_shutdown_s=10,
    )


if __name__ == "__main__":
    main()
