"""``python -m apps.admin``: run the admin API on ADMIN_PORT (8003)."""

from __future__ import annotations

from apps.admin.app import create_app
from shared.serve import serve


def main() -> None:
    # An upload in flight may take a while to finish.
    serve(create_app, service="admin", port=lambda s: s.http.admin_port, graceful_shutdown_s=10)


if __name__ == "__main__":
    main()
