"""Calls from a frontend to the APIs, and what their failures mean to a person.

One ``httpx.AsyncClient`` per frontend process. Every call forwards the request's correlation
id (``X-Correlation-ID``) and W3C trace context, so a click can be followed through the API
into the events it caused. A failure becomes :class:`BackendError` (the API answered with an
error) or :class:`ServiceDown` (no answer); the frontend turns both into a page.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from shared import correlation, tracing
from shared.http import CORRELATION_HEADER
from shared.logging import get_logger

log = get_logger(__name__)

KEEPALIVE_S = 2.0

SERVICE_NAMES = {
    "auth": "the sign-in service (auth API)",
    "users": "the profile service (users API)",
    "admin": "the document service (admin API)",
}
"""How a page names an API that is down."""


@dataclass
class BackendError(Exception):
    """An API answered with an error status."""

    service: str
    status: int
    code: str
    message: str
    details: Any = None
    retry_after: int | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.service} API: {self.status} {self.code}: {self.message}"

    def field_errors(self) -> dict[str, str]:
        """``{field: message}`` from a 422's details (Litestar's ``[{key, message}]``)."""
        found: dict[str, str] = {}
        if isinstance(self.details, list):
            for item in self.details:
                if isinstance(item, dict) and item.get("key"):
                    found.setdefault(str(item["key"]), str(item.get("message") or "is invalid"))
        return found


@dataclass
class ServiceDown(Exception):
    """An API could not be reached (refused, timed out, or answered 502/503/504)."""

    service: str
    reason: str
    retry_after: int | None = None

    def __str__(self) -> str:
        return f"{self.service} API unavailable: {self.reason}"

    @property
    def what(self) -> str:
        return SERVICE_NAMES.get(self.service, f"the {self.service} API")


def _trace_headers() -> dict[str, str]:
    headers: dict[str, str] = {}
    correlation_id = correlation.current()
    if correlation_id:
        headers[CORRELATION_HEADER] = correlation_id
    traceparent, tracestate = tracing.outgoing()  # the request's trace continues in the API
    if traceparent:
        headers["traceparent"] = traceparent
        if tracestate:
            headers["tracestate"] = tracestate
    return headers


class ApiClient:
    """The three APIs by name (``auth``, ``users``, ``admin``)."""

    def __init__(self, base_urls: Mapping[str, str], *, timeout_s: float,
                 transport: httpx.AsyncBaseTransport | None = None,
                 verify: ssl.SSLContext | bool = True) -> None:
        self._base = {name: url.rstrip("/") for name, url in base_urls.items()}
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 3.0)), transport=transport,
            follow_redirects=False,
            # Below uvicorn's 5 s keep-alive: a connection the API is closing is not reused
            # (that race answers "server disconnected" to a request that never arrived).
            limits=httpx.Limits(keepalive_expiry=KEEPALIVE_S),
            verify=verify,  # https APIs: TLS_CA_FILE (shared.tls.client_context)
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def request(
        self, service: str, method: str, path: str, *, token: str | None = None,
        json: Any = None, params: Mapping[str, Any] | None = None,
        files: Any = None, expect: tuple[int, ...] = (), client_ip: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """The API's response for 2xx (and statuses in ``expect``); raises otherwise.

        ``client_ip`` (the browser's address) goes along as ``X-Forwarded-For``: the auth
        API's per-address login limit then counts people, not the frontend (the APIs trust
        the header from ``TRUSTED_PROXIES``, by default the loopback addresses).
        """
        sent = _trace_headers() | dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        if client_ip:
            sent["X-Forwarded-For"] = client_ip
        url = f"{self._base[service]}{path}"
        try:
            response = await self._send(method, url, headers=sent, json=json,
                                        params=params, files=files)
        except httpx.HTTPError as exc:
            log.warning("api.unreachable", service=service, path=path,
                        error_type=type(exc).__name__)
            raise ServiceDown(service, f"{type(exc).__name__}: {exc}".strip(": ")) from exc
        if response.is_success or response.status_code in expect:
            return response
        raise _error(service, response)

    async def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._http.request(method, url, **kwargs)
        except httpx.RemoteProtocolError:
            # A kept-alive connection closed under us: a read is safe to send once more.
            if method not in ("GET", "HEAD"):
                raise
            return await self._http.request(method, url, **kwargs)


def _error(service: str, response: httpx.Response) -> ServiceDown | BackendError:
    retry_after = _retry_after(response.headers.get("retry-after"))
    body: dict[str, Any] = {}
    try:
        parsed = response.json()
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
            body = parsed["error"]
    except ValueError:
        pass
    if response.status_code in (502, 503, 504):
        return ServiceDown(service, str(body.get("message") or response.reason_phrase),
                           retry_after)
    return BackendError(
        service=service, status=response.status_code,
        code=str(body.get("code") or "error"),
        message=str(body.get("message") or response.reason_phrase),
        details=body.get("details"), retry_after=retry_after,
        headers=dict(response.headers),
    )


def _retry_after(value: str | None) -> int | None:
    try:
        return max(0, int(value)) if value is not None else None
    except ValueError:
        return None
