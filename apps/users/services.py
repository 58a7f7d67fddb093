"""Profiles: read through the cache, update with the cache kept current; and the profile
statements the profiles worker runs in its transaction (create, archive, restore)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from apps.users.cache import ProfileCache
from apps.users.models import profiles
from apps.users.schemas import Profile
from shared.errors import NotYetAvailable, TransientError

_encoder = msgspec.json.Encoder()
_PUBLIC = tuple(profiles.c[name] for name in Profile.__struct_fields__)
"""Columns of the public profile (not the archive bookkeeping); archived profiles are hidden."""


class ProfileService:
    """Reads return the encoded JSON body, so a cache hit costs no decode or encode."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        cache: ProfileCache,
        *,
        retry_after_s: int,
    ) -> None:
        self._db = sessions
        self._cache = cache
        self._retry_after_s = retry_after_s

    async def get(self, user_id: uuid.UUID) -> bytes:
        """The profile as JSON; :class:`NotYetAvailable` until the worker created it."""
        cached = await self._cache.get(user_id)
        if cached is not None:
            return cached
        async with self._db() as session:
            row = (
                await session.execute(
                    sa.select(*_PUBLIC).where(
                        profiles.c.user_id == user_id, profiles.c.deleted_at.is_(None)
                    )
                )
            ).first()
        if row is None:
            raise self._not_yet(user_id)
        body = _encoder.encode(Profile(**row._asdict()))
        await self._cache.fill(user_id, body)
        return body

    async def update(self, user_id: uuid.UUID, changes: dict[str, Any]) -> bytes:
        """Apply ``changes`` and write the new profile into the cache."""
        async with self._db() as session, session.begin():
            row = (
                await session.execute(
                    sa.update(profiles)
                    .where(profiles.c.user_id == user_id, profiles.c.deleted_at.is_(None))
                    .values(**changes, updated_at=sa.func.now())
                    .returning(*_PUBLIC)
                )
            ).first()
        if row is None:
            raise self._not_yet(user_id)
        body = _encoder.encode(Profile(**row._asdict()))
        await self._cache.put(user_id, body)
        return body

    def _not_yet(self, user_id: uuid.UUID) -> NotYetAvailable:
        return NotYetAvailable(
            f"profile {user_id} does not exist (yet)", retry_after=self._retry_after_s
        )


class ProfileMissingError(TransientError):
    """The profile to restore is not there (yet): retried, then dead-lettered."""


async def create_profile(
    session: AsyncSession, user_id: uuid.UUID, email: str, display_name: str | None
) -> bool:
    """Insert the profile; False when it already exists (nothing changes then)."""
    created = await session.execute(
        insert(profiles)
        .values(user_id=user_id, email=email, display_name=display_name)
        .on_conflict_do_nothing(index_elements=[profiles.c.user_id])
        .returning(profiles.c.user_id)
    )
    return created.first() is not None


_CREATE_MANY = sa.text(
    """
    INSERT INTO profiles (user_id, email, display_name)
    SELECT * FROM unnest(CAST(:user_ids AS uuid[]), CAST(:emails AS text[]),
                         CAST(:display_names AS text[]))
    ON CONFLICT (user_id) DO NOTHING
    RETURNING user_id
    """
)


async def create_profiles(
    session: AsyncSession, new: Sequence[tuple[uuid.UUID, str, str | None]]
) -> set[uuid.UUID]:
    """Insert several profiles ``(user_id, email, display_name)`` in one statement; returns
    the users whose profile it created (the others existed already and are unchanged)."""
    created = await session.execute(
        _CREATE_MANY,
        {
            "user_ids": [user_id for user_id, _, _ in new],
            "emails": [email for _, email, _ in new],
            "display_names": [display_name for _, _, display_name in new],
        },
    )
    return set(created.scalars())


async def archive_profile(session: AsyncSession, user_id: uuid.UUID, saga_id: uuid.UUID) -> bool:
    """Soft-delete the profile for deletion saga ``saga_id``; False when nothing changed
    (already archived, or no profile)."""
    archived = await session.execute(
        sa.update(profiles)
        .where(profiles.c.user_id == user_id, profiles.c.deleted_at.is_(None))
        .values(deleted_at=sa.func.now(), deleted_by_saga=saga_id)
        .returning(profiles.c.user_id)
    )
    return archived.first() is not None


async def restore_profile(session: AsyncSession, user_id: uuid.UUID) -> bool:
    """Un-archive the profile; False when it was live already.

    The row is locked with ``NOWAIT``: a profile locked by someone else fails at once
    (a transient database error), and so does a missing one (:class:`ProfileMissingError`).
    """
    row = (
        await session.execute(
            sa.select(profiles.c.user_id, profiles.c.deleted_at)
            .where(profiles.c.user_id == user_id)
            .with_for_update(nowait=True)
        )
    ).first()
    if row is None:
        raise ProfileMissingError(f"profile {user_id} to restore does not exist")
    if row.deleted_at is None:
        return False
    await session.execute(
        sa.update(profiles)
        .where(profiles.c.user_id == user_id)
        .values(deleted_at=None, deleted_by_saga=None, updated_at=sa.func.now())
    )
    return True
