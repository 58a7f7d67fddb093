"""The outbox queue's contract on PostgreSQL (:class:`PgOutboxQueue` on authdb's outbox)."""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest

from outbox import store
from outbox.leases import LeaseConnection
from outbox.schema import PARTITIONS
from outbox.store import PgOutboxQueue
from outbox.writer import aggregate_partition
from shared.config import Settings
from shared.db import asyncpg_dsn
from tests.contracts.outbox_queue import (
    AGGREGATE_TYPE,
    ALL,
    OutboxQueueContract,
    RowState,
    apart,
    partition,
)
from tests.relay_support import clear_outbox

_INSERT = """
INSERT INTO outbox (event_id, event_type, routing_key, aggregate_type, aggregate_id,
                    partition, schema_version, payload)
VALUES (gen_random_uuid(), 'user.registered', 'user.registered', $1, $2, $3, 1,
        '{"n": 1}'::jsonb)
RETURNING id
"""


_BULK = """
INSERT INTO outbox (event_id, event_type, routing_key, aggregate_type, aggregate_id,
                    partition, schema_version, payload)
SELECT gen_random_uuid(), 'user.registered', 'user.registered', $1, $2, $3, 1, '{}'::jsonb
FROM generate_series(1, $4)
"""


@dataclass
class SqlWorld:
    queue: PgOutboxQueue
    leases: LeaseConnection
    conn: asyncpg.Connection

    async def add(self, aggregate_id: str) -> int:
        partition = aggregate_partition(AGGREGATE_TYPE, aggregate_id)
        return int(await self.conn.fetchval(_INSERT, AGGREGATE_TYPE, aggregate_id, partition))

    async def state(self, row_id: int) -> RowState | None:
        row = await self.conn.fetchrow(
            "SELECT attempts, last_error, parked_at IS NOT NULL AS parked FROM outbox "
            "WHERE id = $1",
            row_id,
        )
        return None if row is None else RowState(row["attempts"], row["last_error"], row["parked"])


class TestPgOutboxQueue(OutboxQueueContract):
    @pytest.fixture
    async def world(self, settings: Settings) -> AsyncIterator[SqlWorld]:
        await clear_outbox(settings)
        dsn = asyncpg_dsn(settings.database.auth_url)
        leases = LeaseConnection(dsn)
        queue = PgOutboxQueue(dsn, leases)
        conn = await asyncpg.connect(dsn)
        try:
            await leases.open(lambda: None)
            await leases.acquire_up_to(PARTITIONS)
            await queue.connect()
            yield SqlWorld(queue, leases, conn)
        finally:
            await queue.close()
            await leases.close()
            await conn.close()
            await clear_outbox(settings)

    async def test_a_backlog_after_an_idle_spell_on_a_vacuumed_outbox_is_claimed_at_once(
        self, world: SqlWorld
    ) -> None:
        """The relay's VACUUM leaves an emptied outbox at zero pages and zero rows; claims
        planned for that table while idle became a generic plan (after five executions) that
        read the whole outbox once per row: a backlog of 20,000 took longer than the 30 s
        command timeout (bench/relay.py stalled at 300-600 events/s in one run of three)."""
        [a] = apart(1)
        await world.conn.execute(_BULK, AGGREGATE_TYPE, a, partition(a), 1000)
        await world.queue.delete_sent([row.id for row in await world.queue.claim(ALL, [], 2000)])
        assert await world.queue.vacuum()
        for _ in range(8):  # idle polls
            assert await world.queue.claim(ALL, [], 2000) == []
        await world.conn.execute(_BULK, AGGREGATE_TYPE, a, partition(a), 10_000)
        started = time.monotonic()
        rows = await world.queue.claim(ALL, [], 2000)
        assert len(rows) == 2000
        assert time.monotonic() - started < 3.0


async def test_the_merged_claim_returns_what_the_plain_claim_returns(settings: Settings) -> None:
    """The claim for a large backlog (one branch per partition, merged in id order) is the
    same claim: the same rows in the same order for any partitions, rows in flight, rows
    backing off or parked, busy aggregates, and limit."""
    await clear_outbox(settings)
    conn = await asyncpg.connect(asyncpg_dsn(settings.database.auth_url))
    try:
        ids = [
            int(await conn.fetchval(_INSERT, AGGREGATE_TYPE, f"agg-{i % 40}",
                                    aggregate_partition(AGGREGATE_TYPE, f"agg-{i % 40}")))
            for i in range(300)
        ]
        await store.record_failures(conn, [store.Failure(ids[3], "nacked", 60.0)], 5)
        await store.record_failures(conn, [store.Failure(ids[7], "unroutable", 0.0)], 1)
        in_flight = ids[10:40] + ids[100:105]
        cases = [(list(range(PARTITIONS)), 2000), (list(range(PARTITIONS)), 50),
                 ([0, 3, 9], 20), ([5], 7), ([], 10)]
        busy = [(AGGREGATE_TYPE, "agg-5"), (AGGREGATE_TYPE, "agg-17")]
        for (partitions, limit), held in itertools.product(cases, [[], busy]):
            plain = await store.claim(conn, partitions, in_flight, limit, busy=held)
            merged = await store.claim(conn, partitions, in_flight, limit, busy=held, merged=True)
            assert [r.id for r in merged] == [r.id for r in plain], (partitions, limit, held)
            assert merged == plain
        assert len(await store.claim(conn, list(range(PARTITIONS)), [], 2000)) == 300 - 1 - 1 - 7
    finally:
        await conn.close()
        await clear_outbox(settings)
