"""Signing keys: stored in authdb, several live during a rotation, cached in memory.

The newest key that is not retired signs new tokens; every key that is not retired is
published in the JWKS, so tokens signed before a rotation keep verifying until the
operator retires the old key (``amsctl keys retire KID``).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jwt
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from apps.auth.models import signing_keys
from shared.auth import ALGORITHM
from shared.errors import Conflict, NotFound


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: Ed25519PrivateKey
    public_jwk: dict[str, Any]
    created_at: datetime
    retired_at: datetime | None = None


def generate_key_row() -> dict[str, Any]:
    """A new Ed25519 key as an insertable row."""
    private = Ed25519PrivateKey.generate()
    kid = f"{time.strftime('%Y%m%d')}-{secrets.token_hex(4)}"
    jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(private.public_key()))
    jwk.update(kid=kid, alg=ALGORITHM, use="sig")
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return {"kid": kid, "algorithm": ALGORITHM, "private_pem": pem, "public_jwk": jwk}


def _to_key(row: sa.Row[Any]) -> SigningKey:
    private = serialization.load_pem_private_key(row.private_pem.encode(), password=None)
    assert isinstance(private, Ed25519PrivateKey)
    return SigningKey(row.kid, private, dict(row.public_jwk), row.created_at, row.retired_at)


class KeyStore:
    """Key rows in authdb: create, list, retire."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def live(self) -> list[SigningKey]:
        """Keys that are not retired, newest first."""
        query = (
            sa.select(signing_keys)
            .where(signing_keys.c.retired_at.is_(None))
            .order_by(signing_keys.c.created_at.desc(), signing_keys.c.kid.desc())
        )
        async with self._sessions() as session:
            return [_to_key(r) for r in (await session.execute(query)).all()]

    async def all(self) -> list[SigningKey]:
        query = sa.select(signing_keys).order_by(signing_keys.c.created_at.desc())
        async with self._sessions() as session:
            return [_to_key(r) for r in (await session.execute(query)).all()]

    async def create(self) -> str:
        row = generate_key_row()
        async with self._sessions() as session, session.begin():
            await session.execute(sa.insert(signing_keys).values(**row))
        return str(row["kid"])

    async def ensure_one(self) -> None:
        """Create a first key when none is live (a fresh installation)."""
        if not await self.live():
            await self.create()

    async def retire(self, kid: str, *, force: bool = False) -> None:
        """Stop publishing ``kid``; refuses to retire the last live key unless forced."""
        async with self._sessions() as session, session.begin():
            live = (
                (
                    await session.execute(
                        sa.select(signing_keys.c.kid)
                        .where(signing_keys.c.retired_at.is_(None))
                        .with_for_update()
                    )
                )
                .scalars()
                .all()
            )
            if kid not in live:
                raise NotFound(f"no live signing key {kid!r}")
            if len(live) == 1 and not force:
                raise Conflict("refusing to retire the last live signing key; create one first")
            await session.execute(
                sa.update(signing_keys)
                .where(signing_keys.c.kid == kid)
                .values(retired_at=sa.func.now())
            )


class KeyRing:
    """Live keys in memory, re-read from authdb every ``ttl_s`` seconds."""

    def __init__(
        self, store: KeyStore, *, ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._store = store
        self._ttl_s = ttl_s
        self._clock = clock
        self._keys: list[SigningKey] = []
        self._loaded_at: float | None = None

    async def keys(self) -> list[SigningKey]:
        now = self._clock()
        if self._loaded_at is None or now - self._loaded_at > self._ttl_s or not self._keys:
            self._keys = await self._store.live()
            self._loaded_at = now
        return self._keys

    async def signing_key(self) -> SigningKey:
        keys = await self.keys()
        if not keys:
            raise RuntimeError("no live signing key; run `amsctl keys create`")
        return keys[0]

    async def jwks(self) -> dict[str, Any]:
        return {"keys": [k.public_jwk for k in await self.keys()]}

    async def fetch(self) -> dict[str, Any]:
        """:class:`shared.auth.JwksSource`: the auth service verifies from its own ring."""
        return await self.jwks()
