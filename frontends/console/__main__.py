"""``python -m frontends.console``: run the admin console on CONSOLE_PORT (3003)."""

from __future__ import annotations

from frontends.console.app import create_app
from shared.serve import serve


def main() -> None:
    serve(
        create_app, service="console", port=lambda s: s.frontends.console_port,
        graceful_shutdown_s=10,
    )


if __name__ == "__main__":
    main()
