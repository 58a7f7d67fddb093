"""Issuing access and refresh tokens (EdDSA, with ``kid``, every registered claim)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import jwt

from apps.auth.keys import KeyRing
from shared.auth import ACCESS, ALGORITHM, REFRESH, SAGA_WATCH


class TokenIssuer:
    """Signs tokens with the ring's current key."""

    def __init__(
        self,
        ring: KeyRing,
        *,
        issuer: str,
        audience: str,
        access_ttl_s: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ring = ring
        self._issuer = issuer
        self._audience = audience
        self.access_ttl_s = access_ttl_s
        self._clock = clock

    async def access(self, user_id: uuid.UUID, roles: Iterable[str], session_id: uuid.UUID) -> str:
        """An access token for at most ``access_ttl_s`` seconds."""
        now = int(self._clock())
        claims = self._claims(user_id, ACCESS, now, now + self.access_ttl_s, uuid.uuid4())
        claims.update(roles=sorted(roles), sid=str(session_id))
        return await self._sign(claims)

    async def refresh(
        self, user_id: uuid.UUID, jti: uuid.UUID, family_id: uuid.UUID, expires_at: int
    ) -> str:
        """A refresh token; its ``exp`` is the family's absolute expiry."""
        now = int(self._clock())
        claims = self._claims(user_id, REFRESH, now, expires_at, jti)
        claims["sid"] = str(family_id)
        return await self._sign(claims)

    async def saga_watch(self, user_id: uuid.UUID, saga_id: uuid.UUID, ttl_s: int) -> str:
        """A token that reads one deletion saga and nothing else: the person whose account is
        being deleted follows its progress after their own tokens were revoked."""
        now = int(self._clock())
        claims = self._claims(user_id, SAGA_WATCH, now, now + ttl_s, uuid.uuid4())
        claims["saga"] = str(saga_id)
        return await self._sign(claims)

    def _claims(
        self, user_id: uuid.UUID, kind: str, now: int, exp: int, jti: uuid.UUID
    ) -> dict[str, Any]:
        return {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": str(user_id),
            "iat": now,
            "nbf": now,
            "exp": exp,
            "jti": str(jti),
            "typ": kind,
        }

    async def _sign(self, claims: dict[str, Any]) -> str:
        key = await self._ring.signing_key()
        return jwt.encode(claims, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid})
