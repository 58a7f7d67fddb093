"""The partition leases' contract on PostgreSQL (:class:`LeaseConnection` on authdb)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncpg
import pytest

from outbox.leases import LeaseConnection, PartitionLeases
from shared.config import Settings
from shared.db import asyncpg_dsn
from tests.contracts.leases import LeasesContract
from tests.relay_support import clear_outbox


@dataclass
class SqlWorld:
    dsn: str
    conn: asyncpg.Connection
    made: list[LeaseConnection] = field(default_factory=list)

    async def leases(self) -> PartitionLeases:
        leases = LeaseConnection(self.dsn)
        self.made.append(leases)
        return leases

    async def commit(self) -> None:
        await self.conn.execute(
            "INSERT INTO outbox (event_id, event_type, routing_key, aggregate_type,"
            " aggregate_id, partition, schema_version, payload) VALUES (gen_random_uuid(),"
            " 'user.registered', 'user.registered', 'contract', 'n', 0, 1, '{}'::jsonb)"
        )

    async def drop(self, leases: PartitionLeases) -> None:
        assert isinstance(leases, LeaseConnection)
        pid = leases.connection().get_server_pid()
        assert await self.conn.fetchval("SELECT pg_terminate_backend($1)", pid)


class TestLeaseConnection(LeasesContract):
    @pytest.fixture
    async def world(self, settings: Settings) -> AsyncIterator[SqlWorld]:
        dsn = asyncpg_dsn(settings.database.auth_url)
        world = SqlWorld(dsn, await asyncpg.connect(dsn))
        try:
            yield world
        finally:
            for leases in world.made:
                await leases.close()
            await world.conn.close()
            await clear_outbox(settings)
