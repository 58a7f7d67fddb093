"""Signing keys: stored in authdb, several live during a rotation, cached in memory.

The newest key that is not retired signs new tokens; every key that is not retired is
published in the JWKS, so tokens signed before a rotation keep verifying until the
operator retires the old key (``amsctl keys retire KID``).

Private keys reach authdb only encrypted (PKCS#8 ``ENCRYPTED PRIVATE KEY``, PBES2 with
AES-256) under a key-encryption key that lives outside the database (``SIGNING_KEY_KEK``):
a dump or a process that can read authdb gets nothing it can sign with.
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
from shared.errors import AmsError, Conflict, NotFound


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: Ed25519PrivateKey
    public_jwk: dict[str, Any]
    created_at: datetime
    retired_at: datetime | None = None


MIN_KEK_CHARS = 32
_CLEAR = "-----BEGIN PRIVATE KEY-----"


class KeyEncryptionError(AmsError):
    """The key-encryption key is missing, too short, or does not open the stored keys."""


class KeySealer:
    """Encrypts private keys under the key-encryption key before they are stored."""

    def __init__(self, kek: str) -> None:
        if not kek:
            raise KeyEncryptionError(
                "SIGNING_KEY_KEK (or SIGNING_KEY_KEK_FILE) is not set: the private signing "
                "keys in authdb are encrypted with it; generate one with "
                "`openssl rand -base64 32` and keep it outside the database"
            )
        if len(kek) < MIN_KEK_CHARS:
            raise KeyEncryptionError(
                f"SIGNING_KEY_KEK is {len(kek)} characters; at least {MIN_KEK_CHARS} are required"
            )
        self._kek = kek.encode()

    def seal(self, private: Ed25519PrivateKey) -> str:
        return private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(self._kek),
        ).decode()

    def open(self, kid: str, pem: str) -> Ed25519PrivateKey:
        """The private key of a stored row (a legacy clear row is read as it is)."""
        password = None if pem.startswith(_CLEAR) else self._kek
        try:
            private = serialization.load_pem_private_key(pem.encode(), password=password)
        except ValueError as exc:
            raise KeyEncryptionError(
                f"SIGNING_KEY_KEK does not decrypt signing key {kid!r} (were the keys "
                "re-encrypted under another key with `amsctl keys rewrap`?)"
            ) from exc
        if not isinstance(private, Ed25519PrivateKey):
            raise KeyEncryptionError(f"signing key {kid!r} is not an Ed25519 key")
        return private


def generate_key_row(sealer: KeySealer) -> dict[str, Any]:
    """A new Ed25519 key as an insertable row, its private half sealed."""
    private = Ed25519PrivateKey.generate()
    kid = f"{time.strftime('%Y%m%d')}-{secrets.token_hex(4)}"
    jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(private.public_key()))
    jwk.update(kid=kid, alg=ALGORITHM, use="sig")
    return {"kid": kid, "algorithm": ALGORITHM, "private_pem": sealer.seal(private),
            "public_jwk": jwk}


@dataclass(frozen=True)
class KeyInfo:
    """A key's public facts (what ``amsctl keys list`` shows; nothing is decrypted)."""

    kid: str
    created_at: datetime
    retired_at: datetime | None
    encrypted: bool


class KeyStore:
    """Key rows in authdb: create, list, retire, re-encrypt."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], sealer: KeySealer | None
    ) -> None:
        """``sealer`` None: a store that lists and retires but never sees a private key."""
        self._sessions = sessions
        self._given_sealer = sealer

    @property
    def _sealer(self) -> KeySealer:
        if self._given_sealer is None:
            raise KeyEncryptionError("this operation needs SIGNING_KEY_KEK")
        return self._given_sealer

    def _to_key(self, row: sa.Row[Any]) -> SigningKey:
        private = self._sealer.open(row.kid, row.private_pem)
        return SigningKey(row.kid, private, dict(row.public_jwk), row.created_at, row.retired_at)

    async def live(self) -> list[SigningKey]:
        """Keys that are not retired, newest first."""
        query = (
            sa.select(signing_keys)
            .where(signing_keys.c.retired_at.is_(None))
            .order_by(signing_keys.c.created_at.desc(), signing_keys.c.kid.desc())
        )
        async with self._sessions() as session:
            return [self._to_key(r) for r in (await session.execute(query)).all()]

    async def all(self) -> list[KeyInfo]:
        """Every key, newest first, without decrypting any."""
        t = signing_keys.c
        query = sa.select(t.kid, t.created_at, t.retired_at, t.private_pem).order_by(
            t.created_at.desc(), t.kid.desc())
        async with self._sessions() as session:
            rows = (await session.execute(query)).all()
        return [KeyInfo(r.kid, r.created_at, r.retired_at, not r.private_pem.startswith(_CLEAR))
                for r in rows]

    async def seal_clear_rows(self) -> int:
        """Encrypt keys stored in clear before encryption existed; returns how many."""
        return await self.rewrap(self._sealer, only_clear=True)

    async def rewrap(self, new: KeySealer, *, only_clear: bool = False) -> int:
        """Re-encrypt every key (retired ones too) under ``new``, all in one transaction."""
        t = signing_keys.c
        async with self._sessions() as session, session.begin():
            rows = (await session.execute(
                sa.select(t.kid, t.private_pem).with_for_update())).all()
            changed = 0
            for row in rows:
                if only_clear and not row.private_pem.startswith(_CLEAR):
                    continue
                sealed = new.seal(self._sealer.open(row.kid, row.private_pem))
                await session.execute(
                    sa.update(signing_keys).where(t.kid == row.kid).values(private_pem=sealed))
                changed += 1
        return changed

    async def create(self) -> str:
        row = generate_key_row(self._sealer)
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
