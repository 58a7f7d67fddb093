"""The relay's outbox queue: the port (:class:`OutboxQueue`) and its SQL adapter.

The relay claims a batch of its partitions' unsent rows, deletes what the broker
confirmed, records failures with their backoff, reads the backlog and vacuums the table.
Claims run on the :class:`~outbox.leases.LeaseConnection` that holds the partition
locks (so a relay that lost its locks cannot claim); deletes and failure updates run on
a small pool so that they overlap with publishing. The in-memory fake is
``tests.fakes.FakeOutboxQueue``; both pass ``tests/contracts/outbox_queue.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Protocol

import asyncpg

from outbox.leases import LeaseConnection
from outbox.rows import OutboxRow
from outbox.schema import NOTIFY_CHANNEL

# Owned partitions, in id order, skipping parked rows, rows waiting for their retry
# time, rows already in flight, rows whose aggregate has an earlier event backing
# off (so that one aggregate's events never overtake each other), and the rows of the
# aggregates the relay holds rows of already ($4, $5: types and ids, pairwise; a hashed
# filter like $2's, so that the id-ordered scan is kept). No id cursor: a row that
# commits late with a low id is simply found on the next claim.
CLAIM_SQL = """
SELECT id, event_id, event_type, routing_key, aggregate_type, aggregate_id, schema_version,
       payload::text AS payload, headers::text AS headers, correlation_id, traceparent,
       tracestate, created_at, attempts
FROM outbox o
WHERE o.partition = ANY($1::smallint[])
  AND o.parked_at IS NULL
  AND o.next_attempt_at <= now()
  AND o.id NOT IN (SELECT unnest($2::bigint[]))
  AND (o.aggregate_type, o.aggregate_id) NOT IN (SELECT * FROM unnest($4::text[], $5::text[]))
  AND NOT EXISTS (
        SELECT 1 FROM outbox b
        WHERE b.attempts > 0 AND b.parked_at IS NULL
          AND b.aggregate_type = o.aggregate_type AND b.aggregate_id = o.aggregate_id
          AND b.id < o.id)
ORDER BY o.id
LIMIT $3
"""


@cache
def merged_claim_sql(partitions: tuple[int, ...]) -> str:
    """CLAIM_SQL as one branch per partition, merged in id order: for a large backlog.

    CLAIM_SQL reads, checks and sorts every unsent row of the owned partitions (the
    ``partition = ANY(...)`` scan cannot deliver them in id order): 0.2 ms for a few rows,
    but 150-230 ms at a backlog of 60,000, and past the 30 s command timeout once a steady
    2,000 events/s had piled up 80,000 rows behind claims each slower than the last. Here
    each branch reads its partition in id order from ``outbox_claim_idx`` and PostgreSQL
    merges them (a Merge Append) until the LIMIT has its rows: 17-35 ms for 2,000 rows at
    that backlog whatever its size, 0.4 ms for a few rows (16 branches to start)."""
    where = CLAIM_SQL.split("FROM outbox o", 1)[1].split("ORDER BY o.id", 1)[0]
    branches = "\nUNION ALL\n".join(
        f"(SELECT {_COLUMNS} FROM outbox o"  # noqa: S608 - constants and ints only
        + where.replace("WHERE ", f"WHERE o.partition = {int(p)} AND ", 1)
        + "ORDER BY o.id)"
        for p in partitions
    )
    return f"SELECT * FROM (\n{branches}\n) claimable ORDER BY id LIMIT $3"  # noqa: S608

DELETE_SQL = "DELETE FROM outbox WHERE id = ANY($1::bigint[])"

FAIL_SQL = """
UPDATE outbox o
SET attempts = o.attempts + 1,
    last_error = f.error,
    next_attempt_at = now() + make_interval(secs => f.delay),
    parked_at = CASE WHEN o.attempts + 1 >= $4 THEN now() END
FROM unnest($1::bigint[], $2::text[], $3::float8[]) AS f(id, error, delay)
WHERE o.id = f.id
"""

STATUS_SQL = """
SELECT count(*) FILTER (WHERE parked_at IS NULL) AS backlog,
       count(*) FILTER (WHERE parked_at IS NOT NULL) AS parked,
       count(*) FILTER (WHERE parked_at IS NULL AND attempts > 0) AS retrying,
       min(created_at) FILTER (WHERE parked_at IS NULL) AS oldest_unsent,
       now() AS now
FROM outbox
"""


PARKED_SQL = """
SELECT event_id::text AS event_id, event_type, routing_key, aggregate_type,
       aggregate_id::text AS aggregate_id, attempts, last_error, created_at, parked_at
FROM outbox WHERE parked_at IS NOT NULL ORDER BY id LIMIT $1
"""


@dataclass(frozen=True)
class ParkedEvent:
    """An event the relay gave up on, waiting for an operator (``requeue_parked``)."""

    event_id: str
    event_type: str
    routing_key: str
    aggregate_type: str
    aggregate_id: str
    attempts: int
    last_error: str | None
    created_at: datetime
    parked_at: datetime


@dataclass(frozen=True)
class Failure:
    """A row the broker refused: its error, and how long it waits before the next attempt."""

    row_id: int
    error: str
    delay_s: float


@dataclass(frozen=True)
class OutboxStatus:
    backlog: int
    parked: int
    retrying: int
    oldest_age_s: float | None


_COLUMNS = CLAIM_SQL.split("SELECT", 1)[1].split("FROM outbox o", 1)[0]


# The claim also deletes rows the broker confirmed since the previous claim. A statement's
# CTEs and main query share one snapshot, so the SELECT still sees those rows: they are in
# the in-flight list it skips.
DELETE_CTE = "WITH sent AS (DELETE FROM outbox WHERE id = ANY($6::bigint[]))\n"
CLAIM_AND_DELETE_SQL = DELETE_CTE + CLAIM_SQL


async def claim(
    conn: asyncpg.Connection,
    partitions: Sequence[int],
    in_flight: Sequence[int],
    limit: int,
    *,
    delete: Sequence[int] = (),
    busy: Sequence[tuple[str, str]] = (),
    merged: bool = False,
) -> list[OutboxRow]:
    """Claim up to ``limit`` rows (see CLAIM_SQL), none of the ``busy`` aggregates, deleting
    the ``delete`` ids on the way; ``merged``: with :func:`merged_claim_sql`, for a large
    backlog."""
    types = [aggregate_type for aggregate_type, _ in busy]
    args = (list(partitions), list(in_flight), limit, types, [key for _, key in busy])
    sql = merged_claim_sql(tuple(sorted(partitions))) if merged and partitions else CLAIM_SQL
    if delete:
        records = await conn.fetch(DELETE_CTE + sql, *args, list(delete))
    else:
        records = await conn.fetch(sql, *args)
    # Positional: CLAIM_SQL selects the columns in OutboxRow's field order (a unit test
    # holds them equal); a dict per row cost a third of the relay's time under load.
    make = OutboxRow._make
    return [make(r) for r in records]


async def delete_sent(conn: asyncpg.Connection | asyncpg.Pool, ids: Sequence[int]) -> None:
    await conn.execute(DELETE_SQL, list(ids))


async def record_failures(
    pool: asyncpg.Pool, failures: Sequence[Failure], max_attempts: int
) -> None:
    await pool.execute(
        FAIL_SQL,
        [f.row_id for f in failures],
        [f.error[:2000] for f in failures],
        [f.delay_s for f in failures],
        max_attempts,
    )


async def status(conn: asyncpg.Connection | asyncpg.Pool) -> OutboxStatus:
    row = await conn.fetchrow(STATUS_SQL)
    assert row is not None
    oldest: datetime | None = row["oldest_unsent"]
    age = (row["now"] - oldest).total_seconds() if oldest is not None else None
    return OutboxStatus(row["backlog"], row["parked"], row["retrying"], age)


async def parked(conn: asyncpg.Connection | asyncpg.Pool, limit: int = 100) -> list[ParkedEvent]:
    """The parked events, oldest first (at most ``limit``)."""
    return [ParkedEvent(**dict(r)) for r in await conn.fetch(PARKED_SQL, limit)]


async def requeue_parked(
    conn: asyncpg.Connection | asyncpg.Pool, event_ids: Sequence[str] | None
) -> int:
    """Give parked events a fresh attempt budget; all parked events when ``event_ids`` is None."""
    sql = (
        "UPDATE outbox SET parked_at = NULL, attempts = 0, next_attempt_at = now(), "
        "last_error = NULL WHERE parked_at IS NOT NULL"
    )
    if event_ids is None:
        result = await conn.execute(sql)
    else:
        result = await conn.execute(sql + " AND event_id::text = ANY($1::text[])", list(event_ids))
    if result:
        await conn.execute("SELECT pg_notify($1, '')", NOTIFY_CHANNEL)
    return int(result.split()[-1])


class OutboxQueue(Protocol):
    """What the relay needs from its database's outbox."""

    async def connect(self) -> None:
        """Open what the writes need (idempotent: a connected queue stays as it is)."""
        ...

    async def close(self) -> None: ...

    async def claim(
        self,
        partitions: Sequence[int],
        in_flight: Sequence[int],
        limit: int,
        *,
        delete: Sequence[int] = (),
        busy: Sequence[tuple[str, str]] = (),
    ) -> list[OutboxRow]:
        """Up to ``limit`` rows of ``partitions`` in id order, skipping parked rows, rows
        waiting for their next attempt, the ``in_flight`` ids, rows whose aggregate has
        an earlier row backing off, and every row of the ``busy`` aggregates (type, id);
        the ``delete`` ids are deleted on the way (they are not returned when they are in
        ``in_flight``). Raises :class:`ConnectionError` (or a driver error) when the
        partition leases are gone."""
        ...

    async def delete_sent(self, ids: Sequence[int]) -> None:
        """Delete rows the broker confirmed."""
        ...

    async def record_failures(self, failures: Sequence[Failure], max_attempts: int) -> None:
        """Count an attempt for each row, keep its error, hold it back for its delay; park it
        at ``max_attempts``."""
        ...

    async def status(self) -> OutboxStatus: ...

    async def vacuum(self) -> bool:
        """Reclaim the space of deleted rows (they slow each claim down); False when this
        role may not (it does not own the table), and nothing was done."""
        ...


_MAY_VACUUM = """
SELECT CASE WHEN current_setting('server_version_num')::int >= 170000
  THEN has_table_privilege('outbox', 'MAINTAIN')
  ELSE pg_has_role((SELECT relowner FROM pg_class WHERE oid = 'outbox'::regclass), 'USAGE')
END
"""
"""Whether ``VACUUM outbox`` would vacuum: the owner or a superuser; on PostgreSQL 17+ also
a role holding MAINTAIN (migrations/roles.py grants it to the service role)."""


class PgOutboxQueue:
    """:class:`OutboxQueue` on PostgreSQL: claims on the lease connection, the rest on a
    pool of two connections."""

    def __init__(self, dsn: str, leases: LeaseConnection) -> None:
        self._dsn = dsn
        self._leases = leases
        self._pool: asyncpg.Pool | None = None
        self._backlog_large = True
        """The last claim got all the rows it asked for: more may wait, so the next claim
        is the merged one (bounded by its limit); otherwise CLAIM_SQL, cheapest for a few.
        True at first: a relay may start on a backlog."""

    async def connect(self) -> None:
        if self._pool is None:
            # Deleting a confirmed row need not wait for its WAL flush: a delete lost in a
            # database crash only means the event is published once more (at-least-once).
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=1,
                max_size=2,
                command_timeout=30,
                server_settings={"synchronous_commit": "off"},
            )

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def claim(
        self,
        partitions: Sequence[int],
        in_flight: Sequence[int],
        limit: int,
        *,
        delete: Sequence[int] = (),
        busy: Sequence[tuple[str, str]] = (),
    ) -> list[OutboxRow]:
        conn = self._leases.connection()
        rows = await claim(
            conn, partitions, in_flight, limit, delete=delete, busy=busy,
            merged=self._backlog_large,
        )
        self._backlog_large = len(rows) >= limit
        return rows

    async def delete_sent(self, ids: Sequence[int]) -> None:
        await delete_sent(self._require(), ids)

    async def record_failures(self, failures: Sequence[Failure], max_attempts: int) -> None:
        await record_failures(self._require(), failures, max_attempts)

    async def status(self) -> OutboxStatus:
        return await status(self._require())

    async def vacuum(self) -> bool:
        pool = self._require()
        if not await pool.fetchval(_MAY_VACUUM):
            return False  # VACUUM would only warn and skip the table
        await pool.execute("VACUUM outbox")
        return True

    def _require(self) -> asyncpg.Pool:
        if self._pool is None:
            raise ConnectionError("the relay's outbox pool is closed")
        return self._pool
