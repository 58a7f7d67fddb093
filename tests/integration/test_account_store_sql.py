"""The account store's contract on authdb (:class:`SqlAccountStore`)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from apps.auth.accounts import SqlAccountStore
from apps.auth.models import UserStatus, users
from shared.config import Settings
from shared.db import create_engine, session_factory
from tests.contracts.account_store import AccountStoreContract


@dataclass
class SqlWorld:
    store: SqlAccountStore
    sessions: async_sessionmaker[AsyncSession]

    async def add_user(self, email: str, status: str = UserStatus.ACTIVE) -> uuid.UUID:
        user_id = uuid.uuid4()
        async with self.sessions() as session, session.begin():
            await session.execute(
                sa.insert(users).values(
                    id=user_id, email=email, password_hash="$x", status=status
                )
            )
        return user_id


class TestSqlAccountStore(AccountStoreContract):
    @pytest.fixture
    async def world(self, settings: Settings) -> AsyncIterator[SqlWorld]:
        engine = create_engine(settings.database.auth_url, pool_size=1)
        sessions = session_factory(engine)
        try:
            yield SqlWorld(SqlAccountStore(sessions), sessions)
        finally:
            await engine.dispose()
