"""Access-token verification for every API: JWKS cache, pinned algorithm, Redis denylist.

Tokens are signed by the auth service with EdDSA (Ed25519) and carry a ``kid``. A
verifier trusts only keys from the auth service's JWKS, only the pinned algorithm, only
its issuer and audience, and only tokens of type ``access``. A token whose ``jti`` is on
the denylist, or whose session is gone (logout, refresh-token reuse), is refused at once.
Redis is consulted on every request; when it is unreachable the check fails closed with
:class:`~shared.errors.DependencyUnavailable` (503), never letting a revoked token through.

The JWKS is cached: an unknown ``kid`` triggers a refetch (at most one per
``min_refetch_interval_s``), an expired cache is refreshed, and when the auth service is
unreachable the cached keys stay in use.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx
import jwt
import redis.asyncio as aioredis
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.spec import Components, SecurityScheme

from shared.config import Settings
from shared.errors import AuthenticationFailed, DependencyUnavailable, PermissionDenied
from shared.logging import get_logger
from shared.redis_client import unavailable
from shared.tls import check_jwks_url, client_context

ALGORITHM = "EdDSA"
"""The only signing algorithm issued and accepted."""
ACCESS = "access"
REFRESH = "refresh"
SAGA_WATCH = "saga_watch"
"""Values of the ``typ`` claim (a ``saga_watch`` token only reads one deletion saga)."""
ROLE_USER = "user"
ROLE_ADMIN = "admin"
REQUIRED_CLAIMS = ("iss", "aud", "sub", "exp", "iat", "nbf", "jti", "typ")
BEARER_SCHEME = "BearerToken"
"""Name of the OpenAPI security scheme; routes reference it in ``security``."""
_STATE_KEY = "principal"

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller of one request."""

    user_id: uuid.UUID
    roles: frozenset[str]
    jti: str
    expires_at: datetime
    session_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return ROLE_ADMIN in self.roles


# --- Redis keys -----------------------------------------------------------------------
def denylist_key(prefix: str, jti: str) -> str:
    """Present while the access token ``jti`` is revoked (expires with the token)."""
    return f"{prefix}deny:{jti}"


def session_key(prefix: str, session_id: str) -> str:
    """Present while the session (one refresh-token family) is alive."""
    return f"{prefix}session:{session_id}"


# --- JWKS -------------------------------------------------------------------------------
class JwksSource(Protocol):
    """Where public keys come from (the auth service over HTTP, or a fake)."""

    async def fetch(self) -> dict[str, Any]:
        """The JWKS document ``{"keys": [...]}``; raises on any failure."""
        ...


class HttpJwksSource:
    """Fetches the JWKS from the auth service: over https, verified against ``ca_file`` (empty:
    the system's trust store); plain http only from a loopback address (development)."""

    def __init__(
        self, url: str, client: httpx.AsyncClient | None = None, *, ca_file: str = ""
    ) -> None:
        self._url = check_jwks_url(url)
        self._client = client or httpx.AsyncClient(timeout=2.0, verify=client_context(ca_file))

    async def fetch(self) -> dict[str, Any]:
        response = await self._client.get(self._url)
        response.raise_for_status()
        document: dict[str, Any] = response.json()
        return document

    async def aclose(self) -> None:
        await self._client.aclose()


def parse_jwks(document: dict[str, Any]) -> dict[str, jwt.PyJWK]:
    """``kid`` -> key for every usable key of the pinned algorithm; others are ignored."""
    keys: dict[str, jwt.PyJWK] = {}
    for entry in document.get("keys", []):
        kid = entry.get("kid")
        if not isinstance(kid, str) or entry.get("alg", ALGORITHM) != ALGORITHM:
            continue
        try:
            keys[kid] = jwt.PyJWK(entry, algorithm=ALGORITHM)
        except jwt.PyJWTError:
            log.warning("jwks.key_ignored", kid=kid)
    return keys


class JwksCache:
    """Caches a JWKS; refetches when stale or on an unknown ``kid`` (rate-limited)."""

    def __init__(
        self,
        source: JwksSource,
        *,
        ttl_s: float = 300.0,
        min_refetch_interval_s: float = 5.0,
        max_stale_s: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._ttl_s = ttl_s
        self._max_stale_s = max_stale_s
        self._min_interval_s = min_refetch_interval_s
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._lock = asyncio.Lock()

    async def get(self, kid: str) -> jwt.PyJWK | None:
        """The key ``kid``, refetching the JWKS if it is stale or does not know ``kid``."""
        key = self._keys.get(kid)
        if key is not None and not self._stale():
            return key
        await self._refresh()
        if self._expired():
            # Keys kept past their time while the auth service is away would keep a key the
            # operator retired meanwhile working for ever: beyond the bound, fail closed.
            raise DependencyUnavailable(
                "the signing keys could not be refreshed for longer than JWKS_MAX_STALE_S"
            )
        return self._keys.get(kid)

    def vouches_for(self, kid: str) -> bool:
        """Whether ``kid`` is in a cached set that is not stale (no fetch).

        Once the cache is stale, remembered verifications stop counting until the next
        full verification has refreshed the keys, so a retired key stops working.
        """
        return kid in self._keys and not self._stale()

    def _expired(self) -> bool:
        return (self._fetched_at is not None
                and self._clock() - self._fetched_at > self._ttl_s + self._max_stale_s)

    def _stale(self) -> bool:
        return self._fetched_at is None or self._clock() - self._fetched_at > self._ttl_s

    async def _refresh(self) -> None:
        async with self._lock:
            now = self._clock()
            if self._attempted_at is not None and now - self._attempted_at < self._min_interval_s:
                return  # fetched (or tried) a moment ago: no stampede on the auth service
            self._attempted_at = now
            try:
                document = await self._source.fetch()
            except Exception as exc:
                log.warning("jwks.fetch_failed", error=repr(exc), cached_keys=len(self._keys))
                return
            self._keys = parse_jwks(document)
            self._fetched_at = now


# --- denylist ----------------------------------------------------------------------------
class Revocations(Protocol):
    """Which tokens and sessions are revoked."""

    async def is_revoked(self, jti: str, session_id: str | None) -> bool:
        """True when the token is denylisted or its session is gone."""
        ...


class RedisRevocations:
    """The denylist and the session registry in Redis; fails closed."""

    def __init__(self, redis: aioredis.Redis, *, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix

    async def is_revoked(self, jti: str, session_id: str | None) -> bool:
        with unavailable("token revocation check"):
            if session_id is None:
                return bool(await self._redis.exists(denylist_key(self._prefix, jti)))
            # One round trip: denylisted? session alive?
            pipe = self._redis.pipeline(transaction=False)
            pipe.exists(denylist_key(self._prefix, jti))
            pipe.exists(session_key(self._prefix, session_id))
            denied, alive = await pipe.execute()
        return bool(denied) or not alive


# --- the verifier ---------------------------------------------------------------------------
class TokenVerifier:
    """Verifies access tokens: signature, pinned algorithm, claims, type, revocation."""

    def __init__(
        self,
        keys: JwksCache,
        revocations: Revocations,
        *,
        issuer: str,
        audience: str,
        leeway_s: float = 5.0,
        memo_size: int = 10_000,
    ) -> None:
        self._keys = keys
        self._revocations = revocations
        self._issuer = issuer
        self._audience = audience
        self._leeway_s = leeway_s
        self._memo_size = memo_size
        self._memo: dict[str, tuple[str, Principal]] = {}

    async def verify_access(self, token: str) -> Principal:
        """A :class:`Principal`, or :class:`AuthenticationFailed` for any defect.

        The signature and claims of a token are checked once and remembered (while the
        token is unexpired and its key still published); revocation is checked every time.
        """
        principal = self._remembered(token) or await self._verify_signature(token)
        if await self._revocations.is_revoked(principal.jti, principal.session_id):
            raise AuthenticationFailed("token revoked")
        return principal

    def _remembered(self, token: str) -> Principal | None:
        entry = self._memo.get(token)
        if entry is None:
            return None
        kid, principal = entry
        if (
            principal.expires_at.timestamp() + self._leeway_s < time.time()
            or not self._keys.vouches_for(kid)
        ):
            del self._memo[token]
            return None
        return principal

    async def _verify_signature(self, token: str) -> Principal:
        claims = await self.decode(token, expected_type=ACCESS)
        principal = principal_from_claims(claims)
        if len(self._memo) >= self._memo_size:
            self._memo.clear()  # crude but bounded; verifying again is only CPU
        self._memo[token] = (_pinned_kid(token), principal)
        return principal

    async def decode(self, token: str, *, expected_type: str) -> dict[str, Any]:
        """Verified claims of a token of ``expected_type`` (no revocation check)."""
        kid = _pinned_kid(token)
        key = await self._keys.get(kid)
        if key is None:
            raise AuthenticationFailed("unknown signing key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key.key,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway_s,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthenticationFailed("token expired") from exc
        except jwt.PyJWTError as exc:  # the library's text stays out of answers: no oracle
            raise AuthenticationFailed("invalid token") from exc
        if claims.get("typ") != expected_type:
            raise AuthenticationFailed(f"wrong token type (expected {expected_type})")
        return claims


def _pinned_kid(token: str) -> str:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise AuthenticationFailed("malformed token") from exc
    if header.get("alg") != ALGORITHM:
        raise AuthenticationFailed("token algorithm not accepted")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise AuthenticationFailed("token has no key id")
    return kid


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    try:
        user_id = uuid.UUID(str(claims["sub"]))
    except ValueError as exc:
        raise AuthenticationFailed("invalid subject") from exc
    roles = claims.get("roles", [])
    if not isinstance(roles, list):
        raise AuthenticationFailed("invalid roles claim")
    sid = claims.get("sid")
    return Principal(
        user_id=user_id,
        roles=frozenset(str(r) for r in roles),
        jti=str(claims["jti"]),
        expires_at=datetime.fromtimestamp(int(claims["exp"]), tz=UTC),
        session_id=str(sid) if sid is not None else None,
    )


def build_verifier(
    settings: Settings, redis: aioredis.Redis, source: JwksSource | None = None
) -> TokenVerifier:
    """The standard verifier of an API from :class:`shared.config.Settings`."""
    keys = JwksCache(
        source or HttpJwksSource(settings.tokens.jwks_url, ca_file=settings.tls.ca_file),
        ttl_s=settings.tokens.jwks_cache_ttl_s,
        min_refetch_interval_s=settings.tokens.jwks_refetch_min_interval_s,
        max_stale_s=settings.tokens.jwks_max_stale_s,
    )
    return TokenVerifier(
        keys,
        RedisRevocations(redis, prefix=settings.redis.key_prefix),
        issuer=settings.tokens.issuer,
        audience=settings.tokens.audience,
    )


# --- Litestar integration -------------------------------------------------------------------
VERIFIER_STATE = "token_verifier"
"""``app.state`` key under which an app stores its :class:`TokenVerifier`."""


def bearer_token(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """The token of ``Authorization: Bearer <token>``, or 401."""
    header = connection.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationFailed("missing bearer token")
    return token.strip()


async def current_principal(request: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    """Litestar dependency: the verified caller (verified once per request)."""
    cached = request.scope.get("state", {}).get(_STATE_KEY)
    if isinstance(cached, Principal):
        return cached
    verifier: TokenVerifier = request.app.state[VERIFIER_STATE]
    principal = await verifier.verify_access(bearer_token(request))
    request.scope.setdefault("state", {})[_STATE_KEY] = principal
    return principal


def require_admin(principal: Principal) -> Principal:
    """``principal`` if it has the admin role, else :class:`PermissionDenied`."""
    if not principal.is_admin:
        raise PermissionDenied("admin role required")
    return principal


def require_self_or_admin(principal: Principal, user_id: uuid.UUID) -> Principal:
    """``principal`` if it is ``user_id`` itself or an admin, else :class:`PermissionDenied`."""
    if principal.user_id != user_id and not principal.is_admin:
        raise PermissionDenied("only the user themself or an admin may do this")
    return principal


async def admin_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Litestar guard: a valid access token with the admin role."""
    require_admin(await current_principal(connection))


def bearer_components() -> Components:
    """OpenAPI components declaring the bearer scheme (pass to ``OpenAPIConfig``)."""
    return Components(
        security_schemes={
            BEARER_SCHEME: SecurityScheme(
                type="http",
                scheme="bearer",
                bearer_format="JWT",
                description="Access token from POST /auth/login (EdDSA, at most 15 minutes).",
            )
        }
    )


SECURITY: list[dict[str, list[str]]] = [{BEARER_SCHEME: []}]
"""``security=`` value for routes that need a bearer token."""
