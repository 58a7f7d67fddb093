"""``python -m apps.users``: run the users API on USERS_PORT (8001)."""

from __future__ import annotations

from apps.users.app import create_app
from shared.serve import serve


def main() -> None:
    serve(create_app, service="users", port=lambda s: s.http.users_port)


if __name__ == "__main__":
    main()
