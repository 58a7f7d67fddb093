"""Partition ownership for several relay copies, on one dedicated connection.

Each relay holds a PostgreSQL session advisory lock per partition it owns, plus one
"member" lock that lets relays count each other. Locks vanish with the connection, so a
relay killed with ``kill -9`` frees its partitions at once. Claims are made on this same
connection: a relay whose connection (and so whose locks) is gone cannot claim anything.
The connection also LISTENs for the outbox trigger's notifications.

Fair share: ``ceil(PARTITIONS / members)``. A relay above its share releases partitions
(after draining its in-flight batches); one below it picks free ones up. A partition is
published by exactly one relay at a time, in id order, which keeps every aggregate's
events in commit order (see :mod:`outbox.writer`).

:class:`PartitionLeases` is the relay's port; the in-memory fake is
``tests.fakes.FakeLeases``; both pass ``tests/contracts/leases.py``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Protocol

import asyncpg

from outbox.schema import NOTIFY_CHANNEL, PARTITIONS

LOCK_CLASS_PARTITION = 0x0A75_0001
"""advisory lock class id (first key) of partition locks."""
LOCK_CLASS_MEMBER = 0x0A75_0002
"""advisory lock class id of relay membership locks."""

_COUNT_MEMBERS = """
SELECT count(*) FROM pg_locks
WHERE locktype = 'advisory' AND granted AND classid = $1::oid AND objsubid = 2
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


class PartitionLeases(Protocol):
    """The partitions one relay owns among its copies, and the outbox's commit signal."""

    @property
    def owned(self) -> set[int]:
        """The partitions held now (empty while not open)."""
        ...

    @property
    def alive(self) -> bool: ...

    async def open(self, on_notify: Callable[[], None]) -> None:
        """Join the relays (own nothing yet); ``on_notify`` is called when rows commit."""
        ...

    async def close(self) -> None:
        """Release every partition and leave."""
        ...

    def lost(self) -> None:
        """Forget a broken lease (its partitions are free for others already)."""
        ...

    async def share(self) -> int:
        """How many partitions this relay should own now."""
        ...

    async def acquire_up_to(self, share: int) -> None:
        """Take free partitions until ``share`` are owned (fewer when others hold them)."""
        ...

    async def release_down_to(self, share: int) -> None:
        """Release partitions until ``share`` are owned."""
        ...


class LeaseConnection:
    """The relay's own connection: partition locks, membership, LISTEN, claims."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._on_notify: Callable[[], None] = _ignore
        self.conn: asyncpg.Connection | None = None
        self.owned: set[int] = set()
        self._member_key = random.randint(1, 2**31 - 1)  # noqa: S311 - an id, not a secret

    @property
    def alive(self) -> bool:
        return self.conn is not None and not self.conn.is_closed()

    async def open(self, on_notify: Callable[[], None]) -> None:
        # Claims delete confirmed rows on the way (outbox.store.claim); like every delete of
        # the relay they need not wait for their WAL flush: a delete lost in a crash only
        # means the event is published once more (at-least-once).
        # Claims are planned for each execution (asyncpg prepares them once per connection,
        # and PostgreSQL would switch to a generic plan after five): the best plan depends on
        # the backlog, which goes from none to tens of thousands of rows between two claims.
        # A generic plan made while the outbox was empty (the relay's VACUUM leaves it at zero
        # pages and rows) read the whole outbox once per row: 20,000 rows took over 30 s.
        conn = await asyncpg.connect(
            self._dsn,
            command_timeout=30,
            server_settings={"synchronous_commit": "off", "plan_cache_mode": "force_custom_plan"},
        )
        await conn.execute(
            "SELECT pg_advisory_lock($1::int, $2::int)", LOCK_CLASS_MEMBER, self._member_key
        )
        self._on_notify = on_notify
        await conn.add_listener(NOTIFY_CHANNEL, self._notified)
        self.conn = conn
        self.owned = set()

    async def close(self) -> None:
        conn, self.conn = self.conn, None
        self.owned = set()
        if conn is not None and not conn.is_closed():
            try:
                await conn.close(timeout=5)
            except (OSError, asyncpg.PostgresError, TimeoutError):
                conn.terminate()

    def lost(self) -> None:
        """Forget a broken connection (its locks are gone with it)."""
        if self.conn is not None:
            self.conn.terminate()
        self.conn = None
        self.owned = set()

    def _notified(self, *_: object) -> None:
        self._on_notify()

    async def share(self) -> int:
        """How many partitions this relay should own now."""
        members = await self.connection().fetchval(_COUNT_MEMBERS, LOCK_CLASS_MEMBER)
        return math.ceil(PARTITIONS / max(1, int(members)))

    async def acquire_up_to(self, share: int) -> None:
        conn = self.connection()
        free = [p for p in range(PARTITIONS) if p not in self.owned]
        random.shuffle(free)  # copies starting together spread instead of colliding
        for partition in free:
            if len(self.owned) >= share:
                return
            if await conn.fetchval(
                "SELECT pg_try_advisory_lock($1::int, $2::int)", LOCK_CLASS_PARTITION, partition
            ):
                self.owned.add(partition)

    async def release_down_to(self, share: int) -> None:
        conn = self.connection()
        for partition in sorted(self.owned, reverse=True)[: max(0, len(self.owned) - share)]:
            await conn.fetchval(
                "SELECT pg_advisory_unlock($1::int, $2::int)", LOCK_CLASS_PARTITION, partition
            )
            self.owned.discard(partition)

    def connection(self) -> asyncpg.Connection:
        """The open connection (claims run on it: no lease, no claim)."""
        if self.conn is None or self.conn.is_closed():
            raise ConnectionError("the relay's lease connection is closed")
        return self.conn


def _ignore() -> None:
    return None
