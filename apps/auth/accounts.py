"""Accounts and refresh-token families in authdb: the statements login, refresh rotation,
logout and who-am-I run, behind :class:`AccountStore` (:class:`SqlAccountStore`; tests use
a fake). Each call is its own short transaction."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from apps.auth.models import UserStatus, refresh_families, refresh_tokens, users


@dataclass(frozen=True)
class Credentials:
    user_id: uuid.UUID
    password_hash: str
    roles: list[str]
    status: str


@dataclass(frozen=True)
class AccountView:
    email: str
    roles: list[str]
    status: str


@dataclass(frozen=True)
class Rotation:
    """A refresh token spent: who it was for, the family's expiry, the token replacing it."""

    user_id: uuid.UUID
    roles: list[str]
    expires_at: datetime
    new_jti: uuid.UUID


@dataclass(frozen=True)
class SpentToken:
    """A refresh token presented again after its rotation, in a live family."""

    user_id: uuid.UUID
    roles: list[str]
    expires_at: datetime
    replaced_by: uuid.UUID
    within_grace: bool
    """Spent less than the reuse grace ago, and its successor still unused."""


class AccountStore(Protocol):
    async def credentials(self, email: str) -> Credentials | None: ...

    async def set_password_hash(self, user_id: uuid.UUID, password_hash: str) -> None: ...

    async def open_family(
        self, user_id: uuid.UUID, family_id: uuid.UUID, jti: uuid.UUID, expires_at: datetime
    ) -> None:
        """A new refresh-token family (a session) with its first token."""
        ...

    async def rotate(self, jti: uuid.UUID, family_id: uuid.UUID) -> Rotation | None:
        """Spend token ``jti`` and add its successor, if it is unspent, its family live and
        unexpired and its user active; None otherwise. Exactly one concurrent caller wins."""
        ...

    async def spent(
        self, jti: uuid.UUID, family_id: uuid.UUID, *, grace_s: float
    ) -> SpentToken | None:
        """``jti`` if it was spent already in a live family (unknown token, or a revoked or
        expired family, or an inactive user: None)."""
        ...

    async def revoke_family(self, family_id: uuid.UUID, reason: str) -> None: ...

    async def account(self, user_id: uuid.UUID) -> AccountView | None: ...


class SqlAccountStore:
    """:class:`AccountStore` on authdb."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._db = sessions

    async def credentials(self, email: str) -> Credentials | None:
        query = sa.select(users.c.id, users.c.password_hash, users.c.roles, users.c.status)
        async with self._db() as session:
            row = (await session.execute(query.where(users.c.email == email))).first()
        if row is None:
            return None
        return Credentials(row.id, row.password_hash, list(row.roles), row.status)

    async def set_password_hash(self, user_id: uuid.UUID, password_hash: str) -> None:
        async with self._db() as session, session.begin():
            await session.execute(
                sa.update(users)
                .where(users.c.id == user_id)
                .values(password_hash=password_hash, updated_at=sa.func.now())
            )

    async def open_family(
        self, user_id: uuid.UUID, family_id: uuid.UUID, jti: uuid.UUID, expires_at: datetime
    ) -> None:
        async with self._db() as session, session.begin():
            await session.execute(
                sa.insert(refresh_families).values(
                    id=family_id, user_id=user_id, expires_at=expires_at
                )
            )
            await session.execute(sa.insert(refresh_tokens).values(jti=jti, family_id=family_id))

    async def rotate(self, jti: uuid.UUID, family_id: uuid.UUID) -> Rotation | None:
        new_jti = uuid.uuid4()
        async with self._db() as session, session.begin():
            spent = await session.execute(
                _SPEND, {"jti": jti, "family_id": family_id, "successor": new_jti}
            )
            row = spent.first()
            if row is None:
                return None
            await session.execute(
                sa.insert(refresh_tokens).values(jti=new_jti, family_id=family_id)
            )
        return Rotation(row.user_id, list(row.roles), row.expires_at, new_jti)

    async def spent(
        self, jti: uuid.UUID, family_id: uuid.UUID, *, grace_s: float
    ) -> SpentToken | None:
        params = {"jti": jti, "family_id": family_id, "grace": grace_s}
        async with self._db() as session:
            row = (await session.execute(_GRACE, params)).first()
        if row is None:
            return None
        return SpentToken(
            row.user_id, list(row.roles), row.expires_at, row.replaced_by, bool(row.within_grace)
        )

    async def revoke_family(self, family_id: uuid.UUID, reason: str) -> None:
        async with self._db() as session, session.begin():
            await session.execute(
                sa.update(refresh_families)
                .where(refresh_families.c.id == family_id, refresh_families.c.revoked_at.is_(None))
                .values(revoked_at=sa.func.now(), revoked_reason=reason)
            )

    async def account(self, user_id: uuid.UUID) -> AccountView | None:
        query = sa.select(users.c.email, users.c.roles, users.c.status)
        async with self._db() as session:
            row = (await session.execute(query.where(users.c.id == user_id))).first()
        return None if row is None else AccountView(row.email, list(row.roles), row.status)


# Exactly one concurrent caller gets a row: the UPDATE re-checks ``used_at IS NULL`` after
# waiting for the row lock another refresh of the same token holds.
_SPEND = sa.text(
    """
    UPDATE refresh_tokens t SET used_at = now(), replaced_by = :successor
    FROM refresh_families f JOIN users u ON u.id = f.user_id
    WHERE t.jti = :jti AND t.family_id = :family_id AND t.used_at IS NULL
      AND f.id = t.family_id AND f.revoked_at IS NULL AND f.expires_at > now()
      AND u.status = :active
    RETURNING f.user_id, f.expires_at, u.roles
    """
).bindparams(active=UserStatus.ACTIVE.value)

# A spent token of a live family (no row: unknown token, or a family that is revoked, expired
# or whose user is not active). ``within_grace``: spent less than ``:grace`` seconds ago and
# its successor still unused. A refresh with that successor racing this read is harmless: the
# answer is still the family's one chain, and the successor's next reuse is judged the same way.
_GRACE = sa.text(
    """
    SELECT f.user_id, f.expires_at, u.roles, t.replaced_by,
           (t.replaced_by IS NOT NULL AND s.jti IS NOT NULL AND s.used_at IS NULL
            AND t.used_at > now() - make_interval(secs => CAST(:grace AS double precision)))
             AS within_grace
    FROM refresh_tokens t
    JOIN refresh_families f ON f.id = t.family_id
    JOIN users u ON u.id = f.user_id
    LEFT JOIN refresh_tokens s ON s.jti = t.replaced_by
    WHERE t.jti = :jti AND t.family_id = :family_id AND t.used_at IS NOT NULL
      AND f.revoked_at IS NULL AND f.expires_at > now() AND u.status = :active
    """
).bindparams(active=UserStatus.ACTIVE.value)
