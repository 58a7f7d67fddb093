"""The backend-for-frontend machinery both frontends share: sessions, sign-in, token refresh,
CSRF, calls to the APIs on the signed-in person's behalf, and page rendering.

A :class:`Frontend` is built once per process and lives in the app state; controllers reach it
with :func:`frontend_of`. It never hands a token to the browser: tokens sit in the Redis
session; the browser holds an opaque ``HttpOnly`` cookie.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import time
from typing import Any
from urllib.parse import quote

import httpx
from litestar import Request
from litestar.datastructures import Cookie
from litestar.response import Redirect, Template

from frontends.bff.api import ApiClient, BackendError, ServiceDown
from frontends.bff.session import ANONYMOUS_TTL_S, Session, SessionStore, new_id
from shared.config import Settings
from shared.http import DEVICE_TOKEN_HEADER, DEVICE_TOKEN_PATTERN
from shared.logging import get_logger

log = get_logger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_FIELD = "_csrf"
CSRF_HEADER = "x-csrf-token"
REFRESH_MARGIN_S = 30.0
"""Refresh this long before the access token expires (clock skew, a slow request)."""
REFRESH_LOCK_S = 10.0
STATE_KEY = "frontend"
DEVICE_TOKEN = re.compile(DEVICE_TOKEN_PATTERN)
"""What the auth API accepts as a device token: a cookie altered into anything else is not
sent (the login would be refused as malformed, every time, until the cookie expired)."""


class NotSignedIn(Exception):
    """The page needs a signed-in person (redirect to the sign-in page)."""

    def __init__(self, notice: str | None = None) -> None:
        super().__init__(notice or "sign in first")
        self.notice = notice


class Forbidden(Exception):
    """Signed in, but not allowed here (a 403 page)."""


class CsrfRefused(Exception):
    """A state-changing request without the session's CSRF token (a 403 page)."""


class Frontend:
    """One frontend (``portal`` or ``console``): its sessions and its calls to the APIs."""

    def __init__(self, *, name: str, title: str, settings: Settings, store: SessionStore,
                 api: ApiClient) -> None:
        self.name = name
        self.title = title
        self.settings = settings
        self.store = store
        self.api = api
        self.cookie_name = f"ams_{name}_session"
        self.device_cookie_name = f"ams_{name}_device"

    # --- sessions ----------------------------------------------------------------------------
    async def current(self, request: Request[Any, Any, Any]) -> Session | None:
        """The request's session (loaded once per request), or None."""
        if "session" in request.state:
            cached: Session | None = request.state["session"]
            return cached
        cookie = request.cookies.get(self.cookie_name)
        session = await self.store.load(cookie) if cookie else None
        request.state["session"] = session
        return session

    async def anonymous(self, request: Request[Any, Any, Any]) -> Session:
        """The current session, or a new anonymous one (it holds the CSRF token of a form)."""
        session = await self.current(request)
        if session is None:
            session = Session(id=new_id())
            await self.store.save(session, ANONYMOUS_TTL_S)
            self._set(request, session)
        return session

    async def signed_in(self, request: Request[Any, Any, Any]) -> Session:
        session = await self.current(request)
        if session is None or not session.signed_in:
            raise NotSignedIn
        return session

    async def save(self, session: Session) -> None:
        ttl = self.settings.frontends.session_ttl_s if session.signed_in else ANONYMOUS_TTL_S
        await self.store.save(session, ttl)

    async def end(self, request: Request[Any, Any, Any], session: Session) -> None:
        await self.store.delete(session.id)
        request.state["session"] = None
        request.state["cookie"] = Cookie(
            key=self.cookie_name, value="", max_age=0, path="/", httponly=True, samesite="lax",
            secure=self._secure(request),
        )

    def _set(self, request: Request[Any, Any, Any], session: Session) -> None:
        request.state["session"] = session
        request.state["cookie"] = Cookie(
            key=self.cookie_name, value=session.id, path="/", httponly=True, samesite="lax",
            secure=self._secure(request),
        )

    def _remember_device(self, request: Request[Any, Any, Any], token: object) -> None:
        """The auth API's device token in a long-lived httpOnly cookie: this browser's next
        sign-in proves it has signed in to the account before, so nobody else's failed
        attempts delay it (docs/security.md). It opens nothing by itself."""
        if isinstance(token, str) and token:
            request.state["device_cookie"] = Cookie(
                key=self.device_cookie_name, value=token, path="/", httponly=True,
                samesite="lax", secure=self._secure(request),
                max_age=self.settings.login.device_ttl_s,
            )

    def _secure(self, request: Request[Any, Any, Any]) -> bool:
        return self.settings.frontends.session_cookie_secure or request.url.scheme == "https"

    async def page_view(self, request: Request[Any, Any, Any]) -> None:
        """A person opened a page: a one-time notice (set before a redirect) moves onto it,
        and a signed-in session lives ``SESSION_TTL_S`` from now."""
        session = await self.current(request)
        if session is None:
            return
        if session.notice:
            request.state["notice"] = session.notice
            session.notice = None
            await self.save(session)
        elif session.signed_in:
            await self.store.touch(session.id, self.settings.frontends.session_ttl_s)

    # --- CSRF --------------------------------------------------------------------------------
    async def check_csrf(self, request: Request[Any, Any, Any]) -> None:
        """Refuse a state-changing request whose token is missing or not the session's."""
        if request.method in SAFE_METHODS:
            return
        session = await self.current(request)
        sent = request.headers.get(CSRF_HEADER)
        if sent is None:
            form = await request.form()
            value = form.get(CSRF_FIELD)
            sent = value if isinstance(value, str) else None
        if session is None or not sent or not hmac.compare_digest(sent, session.csrf):
            log.warning("frontend.csrf_refused", path=request.url.path,
                        has_session=session is not None, has_token=bool(sent))
            raise CsrfRefused

    # --- signing in and out ------------------------------------------------------------------
    async def sign_in(self, request: Request[Any, Any, Any], email: str, password: str) -> Session:
        """Log in at the auth API; a fresh session id holds the tokens (no fixation)."""
        device = request.cookies.get(self.device_cookie_name) or ""
        answer = await self.api.request(
            "auth", "POST", "/auth/login", json={"email": email, "password": password},
            client_ip=client_ip(request),
            headers={DEVICE_TOKEN_HEADER: device} if DEVICE_TOKEN.fullmatch(device) else None,
        )
        tokens = answer.json()
        me = (await self.api.request(
            "auth", "GET", "/auth/me", token=tokens["access_token"]
        )).json()
        old = await self.current(request)
        session = Session(
            id=new_id(), user_id=str(me["user_id"]), email=str(me["email"]),
            roles=list(me.get("roles") or []),
        )
        _store_tokens(session, tokens)
        self._remember_device(request, answer.headers.get(DEVICE_TOKEN_HEADER))
        if old is not None:
            await self.store.delete(old.id)
        await self.save(session)
        self._set(request, session)
        log.info("frontend.signed_in", user_id=session.user_id)
        return session

    async def revoke(self, session: Session) -> bool:
        """Log out at the auth API (the access token stops working at once); False if the auth
        API could not be told."""
        if not session.access_valid(time.time()):
            return True  # an expired token needs no revocation
        try:
            await self.api.request("auth", "POST", "/auth/logout", token=session.access_token,
                                   expect=(401,))
        except (ServiceDown, BackendError) as exc:
            log.warning("frontend.logout_not_revoked", error=str(exc))
            return False
        return True

    async def sign_out(self, request: Request[Any, Any, Any]) -> bool:
        session = await self.current(request)
        revoked = True
        if session is not None:
            revoked = await self.revoke(session) if session.signed_in else True
            await self.end(request, session)
        return revoked

    # --- tokens ------------------------------------------------------------------------------
    async def token(self, request: Request[Any, Any, Any]) -> str:
        """A valid access token of the signed-in person, refreshed transparently."""
        session = await self.signed_in(request)
        if session.access_valid(time.time(), REFRESH_MARGIN_S):
            return str(session.access_token)
        return await self._refresh(request, session)

    async def _refresh(self, request: Request[Any, Any, Any], session: Session) -> str:
        # One refresh per session at a time: a refresh token is single-use, and presenting
        # a spent one revokes the whole family (the person would be signed out).
        if not await self.store.lock(session.id, REFRESH_LOCK_S):
            return await self._wait_for_refresh(request, session)
        try:
            fresh = await self.store.load(session.id)
            if fresh is not None and fresh.access_valid(time.time(), REFRESH_MARGIN_S):
                request.state["session"] = fresh
                return str(fresh.access_token)
            try:
                tokens = (await self.api.request(
                    "auth", "POST", "/auth/refresh", json={"refresh_token": session.refresh_token}
                )).json()
            except ServiceDown:
                # Auth is down: keep working with the current token until it expires.
                if session.access_valid(time.time()):
                    return str(session.access_token)
                raise
            except BackendError as exc:
                if exc.status in (401, 403, 422):
                    await self.end(request, session)
                    raise NotSignedIn("Your session has ended; please sign in again.") from exc
                raise
            _store_tokens(session, tokens)
            await self.save(session)
            return str(session.access_token)
        finally:
            await self.store.unlock(session.id)

    async def _wait_for_refresh(self, request: Request[Any, Any, Any], session: Session) -> str:
        deadline = time.monotonic() + REFRESH_LOCK_S
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            fresh = await self.store.load(session.id)
            if fresh is None or not fresh.signed_in:
                raise NotSignedIn("Your session has ended; please sign in again.")
            if fresh.access_valid(time.time(), REFRESH_MARGIN_S):
                request.state["session"] = fresh
                return str(fresh.access_token)
        if session.access_valid(time.time()):
            return str(session.access_token)
        raise ServiceDown("auth", "token refresh did not finish in time")

    async def call(self, request: Request[Any, Any, Any], service: str, method: str, path: str,
                   **kwargs: Any) -> httpx.Response:
        """Call an API as the signed-in person. A 401 (token revoked or expired early) gets one
        refresh and retry; a second 401 ends the session."""
        token = await self.token(request)
        try:
            return await self.api.request(service, method, path, token=token, **kwargs)
        except BackendError as exc:
            if exc.status != 401:
                raise
        session = await self.signed_in(request)
        session.access_expires_at = 0.0
        token = await self._refresh(request, session)
        try:
            return await self.api.request(service, method, path, token=token, **kwargs)
        except BackendError as exc:
            if exc.status == 401:
                await self.end(request, session)
                raise NotSignedIn("Your session has ended; please sign in again.") from exc
            raise

    # --- rendering ---------------------------------------------------------------------------
    def page(self, request: Request[Any, Any, Any], template: str, *, status: int = 200,
             **context: Any) -> Template:
        """A server-rendered page; sets the session cookie when the request created one."""
        session: Session | None = request.state.get("session")
        base = {
            "app_name": self.name, "app_title": self.title, "session": session,
            "csrf_token": session.csrf if session is not None else "",
            "path": request.url.path, "notice": request.state.get("notice"),
        }
        return Template(template_name=template, context=base | context, status_code=status,
                        cookies=self._cookies(request))

    def redirect(self, request: Request[Any, Any, Any], to: str) -> Redirect:
        return Redirect(path=to, status_code=303, cookies=self._cookies(request))

    def login_redirect(self, request: Request[Any, Any, Any]) -> Redirect:
        target = request.url.path if request.method == "GET" else "/"
        return self.redirect(request, f"/login?next={quote(target)}")

    @staticmethod
    def _cookies(request: Request[Any, Any, Any]) -> list[Cookie]:
        found = (request.state.get("cookie"), request.state.get("device_cookie"))
        return [cookie for cookie in found if cookie is not None]


def _store_tokens(session: Session, tokens: dict[str, Any]) -> None:
    session.access_token = str(tokens["access_token"])
    session.refresh_token = str(tokens["refresh_token"])
    session.access_expires_at = time.time() + float(tokens.get("expires_in") or 0)


def client_ip(request: Request[Any, Any, Any]) -> str | None:
    """The browser's address as this process sees it (uvicorn resolves a trusted proxy's
    ``X-Forwarded-For``); the frontend's own header replaces, never extends, what came in."""
    return request.client.host if request.client else None


def frontend_of(request: Request[Any, Any, Any]) -> Frontend:
    frontend: Frontend = request.app.state[STATE_KEY]
    return frontend


def safe_next(target: str | None, default: str = "/") -> str:
    """A same-site path to go to after sign-in (never an absolute or scheme-relative URL)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target
