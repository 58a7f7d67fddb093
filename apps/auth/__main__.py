"""``python -m apps.auth``: run the auth service on AUTH_PORT (8002)."""

from __future__ import annotations

import sys

from apps.auth.app import create_app
from apps.auth.keys import KeyEncryptionError
from shared.serve import serve

EXIT_MISCONFIGURED = 3


def main() -> None:
    try:
        serve(create_app, service="auth", port=lambda s: s.http.auth_port)
    except KeyEncryptionError as exc:
        sys.stderr.write(f"auth: refusing to start: {exc}\n")
        raise SystemExit(EXIT_MISCONFIGURED) from None


if __name__ == "__main__":
    main()
