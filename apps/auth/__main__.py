"""``python -m apps.auth``: run the auth service on AUTH_PORT (8002)."""

from __future__ import annotations

from apps.auth.app import create_app
from shared.serve import serve


def main() -> None:
    serve(create_app, service="auth", port=lambda s: s.auth_port)


if __name__ == "__main__":
    main()
