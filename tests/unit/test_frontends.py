"""The frontends' machinery with fakes: sessions in memory, the three APIs as an httpx mock.

What a person (or an attacker) would notice: CSRF refusals, cookie flags, no token in any
page, one refresh for many concurrent requests, pages while an API is down, error pages.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient, TestClient

from frontends.bff.api import ApiClient, BackendError, ServiceDown
from frontends.bff.app import CONTENT_SECURITY_POLICY
from frontends.bff.core import CsrfRefused
from frontends.bff.errors import problem_of
from frontends.bff.session import MemorySessionStore
from frontends.console.app import create_app as create_console
from frontends.portal.app import create_app as create_portal
from frontends.portal.controllers import LEGAL_HOLD_WORDS, in_words
from shared.config import Settings
from shared.errors import DependencyUnavailable, NotFound, ValidationFailed

PASSWORD = "right password"


@dataclass
class FakeApis:
    """Just enough of auth, users and admin for the frontends."""

    roles: list[str] = field(default_factory=lambda: ["user"])
    expires_in: int = 900
    refreshed_expires_in: int = 900
    auth_down: bool = False
    users_down: bool = False
    refreshes: int = 0
    logouts: int = 0
    display_name: str = "Ada"
    seen_tokens: list[str] = field(default_factory=list)
    correlation_ids: list[str] = field(default_factory=list)
    traceparents: list[str] = field(default_factory=list)
    document_queries: list[dict[str, str]] = field(default_factory=list)
    login_addresses: list[str] = field(default_factory=list)
    login_devices: list[str | None] = field(default_factory=list)
    _serial: Iterator[int] = field(default_factory=itertools.count)
    user_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def tokens(self, expires_in: int) -> dict[str, Any]:
        n = next(self._serial)
        return {"access_token": f"ACCESS-SECRET-{n}", "refresh_token": f"REFRESH-SECRET-{n}",
                "token_type": "Bearer", "expires_in": expires_in}

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.correlation_ids.append(request.headers.get("x-correlation-id", ""))
        self.traceparents.append(request.headers.get("traceparent", ""))
        if request.headers.get("authorization"):
            self.seen_tokens.append(request.headers["authorization"])
        host, path = request.url.port, request.url.path
        if host == 8002:
            return self._auth(request, path)
        if host == 8001:
            return self._users(request)
        return self._admin(request, path)

    def _auth(self, request: httpx.Request, path: str) -> httpx.Response:
        if self.auth_down:
            raise httpx.ConnectError("connection refused", request=request)
        if path == "/auth/login":
            self.login_addresses.append(request.headers.get("x-forwarded-for", ""))
            body = request.read().decode()
            self.login_devices.append(request.headers.get("x-device-token"))
            if PASSWORD not in body:
                return _error(401, "authentication_failed", "invalid email or password")
            return httpx.Response(200, json=self.tokens(self.expires_in),
                                  headers={"X-Device-Token": "device-of-ada"})
        if path == "/auth/me":
            return httpx.Response(200, json={"user_id": self.user_id, "email": "ada@example.org",
                                             "roles": self.roles, "status": "active"})
        if path == "/auth/refresh":
            self.refreshes += 1
            return httpx.Response(200, json=self.tokens(self.refreshed_expires_in))
        if path == "/auth/logout":
            self.logouts += 1
            return httpx.Response(204)
        return _error(404, "not_found", "no such route")

    def _users(self, request: httpx.Request) -> httpx.Response:
        if self.users_down:
            raise httpx.ConnectError("connection refused", request=request)
        if request.method == "PATCH":
            name = httpx.Request("POST", "/", content=request.read()).read().decode()
            if len(name) > 200:
                return _error(422, "validation_failed", "request validation failed",
                              [{"key": "display_name", "message": "too long"}])
            self.display_name = re.sub(r'.*"display_name":\s*"([^"]*)".*', r"\1", name)
        return httpx.Response(200, json={
            "user_id": self.user_id, "email": "ada@example.org", "display_name": self.display_name,
            "bio": None, "created_at": "2026-01-01T00:00:00+00:00",
            "updated_at": "2026-01-01T00:00:00+00:00",
        })

    def _admin(self, request: httpx.Request, path: str) -> httpx.Response:
        if request.method == "POST" and path == "/documents":
            return _error(415, "unsupported_media_type", "unsupported file type")
        if path == "/documents":
            self.document_queries.append(dict(request.url.params))
            return httpx.Response(200, json={"items": [], "total": 0, "limit": 50, "offset": 0})
        return _error(429, "rate_limited", "slow down", retry_after=7)


def _error(status: int, code: str, message: str, details: Any = None,
           retry_after: int | None = None) -> httpx.Response:
    headers = {"Retry-After": str(retry_after)} if retry_after else {}
    return httpx.Response(status, headers=headers,
                          json={"error": {"code": code, "message": message, "details": details}})


SETTINGS = Settings.build(auth_api_url="http://auth:8002", users_api_url="http://users:8001",
                    admin_api_url="http://admin:8003", console_metrics_targets="")


def api_client(fake: FakeApis) -> ApiClient:
    apis = SETTINGS.frontends
    return ApiClient({"auth": apis.auth_api_url, "users": apis.users_api_url,
                      "admin": apis.admin_api_url}, timeout_s=1,
                     transport=httpx.MockTransport(fake.handle))


@pytest.fixture
def fake() -> FakeApis:
    return FakeApis()


@pytest.fixture
def store() -> MemorySessionStore:
    return MemorySessionStore()


@pytest.fixture
def portal(fake: FakeApis, store: MemorySessionStore) -> Litestar:
    return create_portal(SETTINGS, api=api_client(fake), store=store)


def csrf_of(html: str) -> str:
    match = re.search(r'name="_csrf" value="([^"]+)"', html)
    assert match, "no CSRF field on the page"
    return match.group(1)


def sign_in(client: TestClient[Litestar], password: str = PASSWORD) -> httpx.Response:
    token = csrf_of(client.get("/login").text)
    return client.post("/login", data={"_csrf": token, "email": "ada@example.org",
                                       "password": password}, follow_redirects=False)


# --- CSRF, cookie, headers ---------------------------------------------------------------------


def test_a_post_without_the_csrf_token_is_refused_with_403(portal: Litestar) -> None:
    with TestClient(portal) as client:
        client.get("/login")
        refused = client.post("/login", data={"email": "ada@example.org", "password": PASSWORD})
        assert refused.status_code == 403
        assert "This form has expired" in refused.text
        wrong = client.post("/login", data={"_csrf": "guess", "email": "a@b.c",
                                            "password": PASSWORD})
        assert wrong.status_code == 403
        assert sign_in(client).status_code == 303


def test_no_session_means_no_csrf_token_to_match(portal: Litestar) -> None:
    with TestClient(portal) as client:
        response = client.post("/logout", data={"_csrf": ""})
        assert response.status_code == 403


def test_the_callers_trace_context_reaches_the_apis_and_logs_are_the_processs(
    portal: Litestar, fake: FakeApis
) -> None:
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with TestClient(portal) as client:
        token = csrf_of(client.get("/login").text)
        client.post(
            "/login", data={"_csrf": token, "email": "ada@example.org", "password": PASSWORD},
            headers={"traceparent": traceparent, "x-correlation-id": "portal-c1"},
            follow_redirects=False,
        )
    assert fake.traceparents[-1] == traceparent
    assert fake.correlation_ids[-1] == "portal-c1"
    assert portal.logging_config is None  # no plain-text handlers of Litestar's own


def test_security_headers_and_no_caching_of_pages(portal: Litestar) -> None:
    assert "unsafe-inline" not in CONTENT_SECURITY_POLICY
    with TestClient(portal) as client:
        page = client.get("/login")
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["referrer-policy"] == "same-origin"
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["cache-control"] == "no-store"
        assert page.headers["x-correlation-id"]
        assert "<script>" not in page.text and " style=" not in page.text
        static = client.get("/static/site.css")
        assert static.status_code == 200
        assert static.headers.get("cache-control") != "no-store"


def test_the_cookie_is_opaque_http_only_lax_and_secure_over_https(
    fake: FakeApis, store: MemorySessionStore
) -> None:
    with TestClient(create_portal(SETTINGS, api=api_client(fake), store=store)) as client:
        cookie = sign_in(client).headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=lax" in cookie
        assert "Secure" not in cookie  # plain http (local development)
        assert "SECRET" not in cookie
    app = create_portal(SETTINGS, api=api_client(fake), store=store)
    with TestClient(app, base_url="https://portal.example") as client:
        assert "Secure" in sign_in(client).headers["set-cookie"]
    behind_proxy = SETTINGS.replace(session_cookie_secure=True)
    with TestClient(create_portal(behind_proxy, api=api_client(fake), store=store)) as client:
        assert "Secure" in client.get("/login").headers["set-cookie"]


def test_sign_in_passes_the_persons_address_to_the_login_limit(
    portal: Litestar, fake: FakeApis
) -> None:
    with TestClient(portal) as client:
        sign_in(client)
        sign_in(client, password="wrong")
    # The auth API's per-address limit counts the person, not the frontend's own address.
    assert fake.login_addresses == ["testclient", "testclient"]


def test_the_device_token_is_kept_in_a_cookie_and_sent_with_the_next_sign_in(
    portal: Litestar, fake: FakeApis
) -> None:
    """The auth API admits a device that signed in before even while someone else's failed
    attempts make its address wait: the browser keeps that proof (httpOnly, long-lived)."""
    with TestClient(portal) as client:
        cookies = sign_in(client).headers.get_list("set-cookie")
        [device] = [c for c in cookies if c.startswith("ams_portal_device=")]
        assert "HttpOnly" in device and "SameSite=lax" in device
        assert f"Max-Age={SETTINGS.login.device_ttl_s}" in device
        client.post("/logout", data={"_csrf": csrf_of(client.get("/profile").text)})
        sign_in(client)
        client.cookies.set("ams_portal_device", "altered.value")  # not a token the API takes
        assert sign_in(client).status_code == 303  # signed in all the same
    assert fake.login_devices == [None, "device-of-ada", None]


def test_signing_in_replaces_the_anonymous_session(
    portal: Litestar, store: MemorySessionStore
) -> None:
    with TestClient(portal) as client:
        client.get("/login")
        anonymous = client.cookies["ams_portal_session"]
        sign_in(client)
        signed_in = client.cookies["ams_portal_session"]
        assert signed_in != anonymous
        assert anonymous not in store.data
        assert "ACCESS-SECRET" in store.data[signed_in]


def test_no_page_carries_a_token(portal: Litestar, fake: FakeApis) -> None:
    with TestClient(portal) as client:
        sign_in(client)
        for path in ("/profile", "/documents", "/account", "/documents/rows",
                     "/profile/fragment"):
            page = client.get(path)
            assert page.status_code == 200, path
            assert "SECRET" not in page.text, path
        assert fake.seen_tokens, "the API calls carried the token"
        assert all(cid for cid in fake.correlation_ids), "every API call carries a correlation id"


def test_the_correlation_id_of_a_page_travels_to_the_apis(portal: Litestar, fake: FakeApis
                                                           ) -> None:
    with TestClient(portal) as client:
        sign_in(client)
        page = client.get("/documents", headers={"X-Correlation-ID": "click-42"})
        assert page.headers["x-correlation-id"] == "click-42"
        assert fake.correlation_ids[-1] == "click-42"


def test_logout_revokes_at_the_auth_api_and_forgets_the_session(
    portal: Litestar, fake: FakeApis, store: MemorySessionStore
) -> None:
    with TestClient(portal) as client:
        sign_in(client)
        token = csrf_of(client.get("/profile").text)
        response = client.post("/logout", data={"_csrf": token}, follow_redirects=False)
        assert response.headers["location"] == "/login?signed_out=true"
        assert fake.logouts == 1
        assert not any("ACCESS-SECRET" in v for v in store.data.values())
        assert client.get("/profile", follow_redirects=False).headers["location"].startswith(
            "/login"
        )


def test_the_portal_lists_only_the_persons_own_documents_also_for_an_admin(
    portal: Litestar, fake: FakeApis, store: MemorySessionStore
) -> None:
    fake.roles = ["user", "admin"]
    with TestClient(portal) as client:
        sign_in(client)
        assert client.get("/documents").status_code == 200
        assert fake.document_queries[-1]["owner_id"] == fake.user_id
        touched = store.touched
        client.get("/documents/rows", headers={"X-Live": "1"})
        assert store.touched == touched, "a fragment poll is not activity"
        client.get("/profile")
        assert store.touched == touched + 1, "a page view keeps the session alive"


# --- tokens: refresh, auth down -----------------------------------------------------------------


async def test_concurrent_requests_refresh_once(fake: FakeApis, store: MemorySessionStore
                                                ) -> None:
    fake.expires_in = 10  # inside the refresh margin: the next request refreshes
    app = create_portal(SETTINGS, api=api_client(fake), store=store)
    async with AsyncTestClient(app) as client:
        login = await client.get("/login")
        await client.post("/login", data={"_csrf": csrf_of(login.text),
                                           "email": "ada@example.org", "password": PASSWORD})
        pages = await asyncio.gather(*(client.get("/documents/rows") for _ in range(6)))
        assert [p.status_code for p in pages] == [200] * 6
        assert fake.refreshes == 1, "a spent refresh token would sign the person out"


def test_auth_down_keeps_a_signed_in_person_working_until_the_token_expires(
    portal: Litestar, fake: FakeApis, store: MemorySessionStore
) -> None:
    fake.expires_in = 20  # due for a refresh, still valid
    with TestClient(portal) as client:
        sign_in(client)
        fake.auth_down = True
        assert client.get("/documents").status_code == 200
        [key] = [k for k, v in store.data.items() if "ACCESS-SECRET" in v]
        session = asyncio.run(store.load(key))
        assert session is not None
        session.access_expires_at = time.time() - 1
        asyncio.run(store.save(session, 60))
        down = client.get("/documents")
        assert down.status_code == 503
        assert "sign-in service" in down.text
        assert down.headers["retry-after"]


def test_users_api_down_shows_the_last_profile_read_only(portal: Litestar, fake: FakeApis
                                                         ) -> None:
    with TestClient(portal) as client:
        sign_in(client)
        assert 'value="Ada"' in client.get("/profile").text
        fake.users_down = True
        page = client.get("/profile")
        assert page.status_code == 200
        assert "The profile service is unavailable right now" in page.text
        assert "readonly" in page.text
        assert ">Save<" not in page.text


def test_users_api_down_without_a_last_copy_is_a_503_page(portal: Litestar, fake: FakeApis
                                                          ) -> None:
    fake.users_down = True
    with TestClient(portal) as client:
        sign_in(client)
        page = client.get("/profile")
        assert page.status_code == 503
        assert "profile service (users API) is not answering" in page.text


# --- error pages -------------------------------------------------------------------------------


def test_api_errors_become_pages_a_person_understands(portal: Litestar) -> None:
    with TestClient(portal) as client:
        sign_in(client)
        token = csrf_of(client.get("/documents").text)
        page = client.post("/documents", data={"_csrf": token},
                           files={"file": ("x.gif", b"GIF89a", "image/gif")})
        assert page.status_code == 415
        assert "PNG, JPEG, TIFF or PDF" in page.text
        assert '"error"' not in page.text and "Traceback" not in page.text


@pytest.mark.parametrize(
    ("error", "status", "says"),
    [
        (BackendError("admin", 413, "payload_too_large", "too big"), 413, "up to 20 MB"),
        (BackendError("admin", 415, "unsupported_media_type", "no"), 415, "PNG, JPEG"),
        (BackendError("users", 422, "validation_failed", "invalid",
                      [{"key": "display_name", "message": "too long"}]), 422, "too long"),
        (BackendError("auth", 429, "rate_limited", "slow", retry_after=42), 429, "42 seconds"),
        (ServiceDown("admin", "refused"), 503, "document service"),
        (DependencyUnavailable("session store: Redis is unavailable"), 503,
         "session store (Redis)"),
        (DependencyUnavailable("RabbitMQ is unreachable: refused"), 503, "RabbitMQ"),
        (NotFound("no saga 42"), 404, "no saga 42"),
        (ValidationFailed("'x' is not a dead-letter queue"), 422, "not a dead-letter queue"),
        (CsrfRefused(), 403, "expired"),
        (RuntimeError("bug"), 500, "on our side"),
    ],
)
def test_every_failure_has_a_status_and_a_sentence(error: Exception, status: int, says: str
                                                   ) -> None:
    problem = problem_of(error, upload_max_bytes=SETTINGS.uploads.max_bytes)
    assert problem.status == status
    text = " ".join([problem.title, problem.message, *problem.fields.values()])
    if problem.retry_after:
        text += f" {problem.retry_after} seconds"
    assert says in text


# --- the console -------------------------------------------------------------------------------


def test_the_console_refuses_a_non_admin_with_a_403_page(fake: FakeApis,
                                                         store: MemorySessionStore) -> None:
    app = create_console(SETTINGS, api=api_client(fake), store=store)
    with TestClient(app) as client:
        refused = sign_in(client)
        assert refused.status_code == 403
        assert "for administrators" in refused.text
        assert fake.logouts == 1, "the non-admin's tokens are revoked at once"
        assert client.get("/documents", follow_redirects=False).status_code == 303


def test_the_console_admits_an_admin(fake: FakeApis, store: MemorySessionStore) -> None:
    fake.roles = ["user", "admin"]
    app = create_console(SETTINGS, api=api_client(fake), store=store)
    with TestClient(app) as client:
        assert sign_in(client).headers["location"] == "/"
        page = client.get("/documents")
        assert page.status_code == 200
        assert "Documents of all users" in page.text


def test_the_consoles_document_filter_refuses_an_owner_that_is_not_a_user_id(
    fake: FakeApis, store: MemorySessionStore
) -> None:
    fake.roles = ["user", "admin"]
    app = create_console(SETTINGS, api=api_client(fake), store=store)
    with TestClient(app) as client:
        sign_in(client)
        asked = len(fake.document_queries)
        page = client.get("/documents", params={"owner": "ada@example.org"})
        assert page.status_code == 422
        assert "An owner is a user id" in page.text
        assert len(fake.document_queries) == asked, "nobody's documents listed as the owner's"
        owner = str(uuid.uuid4())
        assert client.get("/documents", params={"owner": f" {owner} "}).status_code == 200
        assert fake.document_queries[-1]["owner_id"] == owner


class DownStore(MemorySessionStore):
    """Redis away: every call fails as the Redis adapter's would."""

    async def load(self, session_id: str) -> Any:
        raise DependencyUnavailable("session store: Redis is unavailable")

    async def save(self, session: Any, ttl_s: int) -> None:
        raise DependencyUnavailable("session store: Redis is unavailable")


def test_redis_down_is_a_503_page_naming_the_session_store(fake: FakeApis) -> None:
    app = create_portal(SETTINGS, api=api_client(fake), store=DownStore())
    with TestClient(app) as client:
        for path in ("/login", "/register"):
            page = client.get(path)
            assert page.status_code == 503, path
            assert "session store (Redis)" in page.text
        client.cookies.set("ams_portal_session", "some-session")
        assert client.get("/documents").status_code == 503
        assert client.get("/health").status_code == 200
        assert client.get("/static/site.css").status_code == 200


async def test_a_read_is_sent_again_when_a_kept_alive_connection_was_closed() -> None:
    calls = {"n": 0}

    def flaky(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        return httpx.Response(200, json={"ok": True})

    client = ApiClient({"users": "http://users:8001"}, timeout_s=1,
                       transport=httpx.MockTransport(flaky))
    assert (await client.request("users", "GET", "/profiles/me")).json() == {"ok": True}
    calls["n"] = 0
    with pytest.raises(ServiceDown):  # a write is never sent twice
        await client.request("users", "PATCH", "/profiles/me", json={})
    assert calls["n"] == 1
    await client.aclose()


def _saga(*steps: tuple[str, str, str | None]) -> dict[str, Any]:
    return {"saga_id": "s1", "status": "compensated",
            "reason": "documents.delete failed: 1 document(s) of user u1 under legal hold: d1",
            "steps": [{"name": n, "kind": "action", "status": st, "detail": d}
                      for n, st, d in steps]}


def test_a_failed_deletion_is_explained_in_words_not_ids() -> None:
    held = in_words(_saga(("profile.delete", "completed", None),
                          ("documents.delete", "failed", "1 document(s) of user u1 under "
                           "legal hold: d1")))
    assert held["explanation"] == LEGAL_HOLD_WORDS
    assert [s["label"] for s in held["steps"]] == ["Remove your profile",
                                                   "Delete your documents"]
    other = in_words(_saga(("profile.delete", "failed", "timed out")))
    assert other["explanation"] == (
        "The step \u201cRemove your profile\u201d could not be completed.")
    assert in_words(_saga(("profile.delete", "completed", None)))["explanation"] is None
