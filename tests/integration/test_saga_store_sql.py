"""The saga store's contract on authdb (:class:`SqlSagaStore`); each case in a transaction
that is rolled back."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from apps.auth.models import SagaStatus, UserStatus, saga_steps, sagas, users
from apps.auth.sagas import SagaState, SqlSagaStore
from outbox.schema import outbox
from shared.config import Settings
from shared.db import create_engine
from shared.messaging import H_CAUSATION_ID
from tests.contracts.saga_store import SagaStoreContract


@dataclass
class SqlWorld:
    store: SqlSagaStore
    session: AsyncSession

    async def add(self, user_status: UserStatus = UserStatus.DELETING) -> SagaState:
        saga_id, user_id = uuid.uuid4(), uuid.uuid4()
        await self.session.execute(
            sa.insert(users).values(
                id=user_id, email=f"{user_id}@example.com", password_hash="!",
                status=user_status,
            )
        )
        await self.session.execute(
            sa.insert(sagas).values(id=saga_id, user_id=user_id, status=SagaStatus.RUNNING)
        )
        return SagaState(saga_id, user_id, SagaStatus.RUNNING, None, None)

    async def user_status(self, user_id: uuid.UUID) -> str:
        query = sa.select(users.c.status).where(users.c.id == user_id)
        return str(await self.session.scalar(query))

    async def late_replies(self, saga_id: uuid.UUID, step: str) -> int:
        return int(
            await self.session.scalar(
                sa.select(saga_steps.c.late_replies).where(
                    saga_steps.c.saga_id == saga_id, saga_steps.c.name == step
                )
            )
            or 0
        )

    async def commands(self) -> list[str]:
        rows = await self.session.scalars(sa.select(outbox.c.event_type).order_by(outbox.c.id))
        return list(rows)

    async def sent(self) -> list[tuple[str, str | None, str | None]]:
        query = sa.select(outbox.c.event_type, outbox.c.correlation_id, outbox.c.headers)
        rows = await self.session.execute(query.order_by(outbox.c.id))
        return [(t, c, (h or {}).get(H_CAUSATION_ID)) for t, c, h in rows]


class TestSqlSagaStore(SagaStoreContract):
    @pytest.fixture
    async def world(self, settings: Settings) -> AsyncIterator[SqlWorld]:
        engine = create_engine(settings.database.auth_url, pool_size=1)
        try:
            async with engine.connect() as connection:
                transaction = await connection.begin()
                session = AsyncSession(bind=connection, expire_on_commit=False)
                try:
                    yield SqlWorld(SqlSagaStore(), session)
                finally:
                    await session.close()
                    await transaction.rollback()
        finally:
            await engine.dispose()
