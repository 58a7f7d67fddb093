"""A small client of the RabbitMQ management HTTP API (vhosts, permissions, policies, queues)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from shared.errors import DependencyUnavailable


class ManagementClient:
    """Talks to ``RABBITMQ_MANAGEMENT_URL``; credentials come from the URL's user info.

    Several comma-separated URLs (one per cluster node) are tried in order until one
    answers; the one that answered is asked first next time.
    """

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self._bases: list[tuple[str, tuple[str, str]]] = []
        for node in (part.strip() for part in url.split(",") if part.strip()):
            parts = urlsplit(node)
            base = f"{parts.scheme}://{parts.hostname}:{parts.port or 15672}"
            base += parts.path.rstrip("/") + "/api"
            self._bases.append((base, (parts.username or "guest", parts.password or "guest")))
        if not self._bases:
            raise ValueError("RABBITMQ_MANAGEMENT_URL names no node")
        self._http = httpx.Client(timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ManagementClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(
        self, method: str, path: str, *, missing_ok: bool = False, **kwargs: Any
    ) -> httpx.Response:
        """``missing_ok``: a 404 is an answer (DELETE: always), not an error."""
        errors: list[str] = []
        for position, (base, auth) in enumerate(list(self._bases)):
            try:
                response = self._http.request(method, base + path, auth=auth, **kwargs)
            except httpx.HTTPError as exc:
                errors.append(f"{base}: {exc}")
                continue
            if position:  # ask the node that answered first from now on
                self._bases.insert(0, self._bases.pop(position))
            break
        else:
            raise DependencyUnavailable(
                f"RabbitMQ management API is unreachable: {'; '.join(errors)}"
            )
        missing = response.status_code == 404 and (missing_ok or method == "DELETE")
        if response.status_code >= 400 and not missing:
            raise DependencyUnavailable(
                f"RabbitMQ management API {method} {path} answered "
                f"{response.status_code}: {response.text[:200]}"
            )
        return response

    def create_vhost(self, vhost: str, *, user: str = "guest") -> None:
        self._request("PUT", f"/vhosts/{quote(vhost, safe='')}")
        self._request(
            "PUT",
            f"/permissions/{quote(vhost, safe='')}/{quote(user, safe='')}",
            json={"configure": ".*", "write": ".*", "read": ".*"},
        )

    def user_exists(self, user: str) -> bool:
        response = self._request("GET", f"/users/{quote(user, safe='')}", missing_ok=True)
        return response.status_code != 404

    def put_user(self, user: str, password: str, *, tags: str) -> None:
        """Create the user or set its password and tags (idempotent)."""
        self._request("PUT", f"/users/{quote(user, safe='')}",
                      json={"password": password, "tags": tags})

    def delete_user(self, user: str) -> None:
        self._request("DELETE", f"/users/{quote(user, safe='')}")

    def put_permissions(
        self, vhost: str, user: str, *, configure: str, write: str, read: str
    ) -> None:
        self._request(
            "PUT",
            f"/permissions/{quote(vhost, safe='')}/{quote(user, safe='')}",
            json={"configure": configure, "write": write, "read": read},
        )

    def permissions(self, vhost: str, user: str) -> dict[str, Any]:
        path = f"/permissions/{quote(vhost, safe='')}/{quote(user, safe='')}"
        return dict(self._request("GET", path).json())

    def delete_vhost(self, vhost: str) -> None:
        self._request("DELETE", f"/vhosts/{quote(vhost, safe='')}")

    def put_policy(self, vhost: str, name: str, definition: dict[str, Any]) -> None:
        self._request(
            "PUT", f"/policies/{quote(vhost, safe='')}/{quote(name, safe='')}", json=definition
        )

    def exchanges(self, vhost: str) -> list[dict[str, Any]]:
        return list(self._request("GET", f"/exchanges/{quote(vhost, safe='')}").json())

    def nodes(self) -> list[dict[str, Any]]:
        return list(self._request("GET", "/nodes").json())

    def overview(self) -> dict[str, Any]:
        return dict(self._request("GET", "/overview").json())

    def queue(self, vhost: str, name: str) -> dict[str, Any]:
        response = self._request("GET", f"/queues/{quote(vhost, safe='')}/{quote(name, safe='')}")
        return dict(response.json())

    def queues(self, vhost: str, *, totals_only: bool = False) -> list[dict[str, Any]]:
        """Every queue of ``vhost``. ``totals_only``: message counts, type, arguments and
        policy, without the rate statistics (much cheaper for the broker to answer)."""
        params = {"disable_stats": "true", "enable_queue_totals": "true"} if totals_only else {}
        return list(self._request("GET", f"/queues/{quote(vhost, safe='')}",
                                  params=params).json())
