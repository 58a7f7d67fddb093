"""The admin API under test: tokens signed by a key made in the test, a client on the app."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from litestar.testing import AsyncTestClient

from apps.admin.app import create_app
from shared.auth import JwksCache, TokenVerifier
from shared.config import Settings

KEY = Ed25519PrivateKey.generate()


class StaticJwks:
    async def fetch(self) -> dict[str, Any]:
        jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(KEY.public_key()))
        jwk.update(kid="k1", alg="EdDSA", use="sig")
        return {"keys": [jwk]}


class NoRevocations:
    async def is_revoked(self, jti: str, session_id: str | None) -> bool:
        return False


def token(settings: Settings, user_id: uuid.UUID, *roles: str) -> dict[str, str]:
    now = int(time.time())
    claims = {
        "iss": settings.tokens.issuer, "aud": settings.tokens.audience, "sub": str(user_id),
        "iat": now, "nbf": now, "exp": now + 600, "jti": uuid.uuid4().hex, "typ": "access",
        "roles": ["user", *roles],
    }
    signed = jwt.encode(claims, KEY, algorithm="EdDSA", headers={"kid": "k1"})
    return {"Authorization": f"Bearer {signed}"}


def files(content: bytes, name: str = "scan.png", ctype: str = "image/png") -> dict[str, Any]:
    return {"file": (name, content, ctype)}


@contextlib.asynccontextmanager
async def admin_client(settings: Settings) -> AsyncIterator[AsyncTestClient[Any]]:
    verifier = TokenVerifier(
        JwksCache(StaticJwks()), NoRevocations(),
        issuer=settings.tokens.issuer, audience=settings.tokens.audience,
    )
    async with AsyncTestClient(create_app(settings, verifier=verifier)) as client:
        yield client
