"""Store events in the caller's transaction: committed together or not at all.

Code emits through an :class:`Emitter` (or anything that is an :class:`Emit`), so the
correlation and causation of every event are set in one place: a message handler's
``ctx.emit`` is the emitter of that message, a request's is :meth:`Emitter.current`, and a
timer (the saga sweeper) makes one with a correlation id of its own.
"""

from __future__ import annotations

import json
import uuid
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from outbox.schema import PARTITIONS
from shared import correlation, tracing
from shared.events import Message, encode
from shared.messaging import H_CAUSATION_ID
from shared.tracing import TraceHeaders

# The advisory lock serialises writers of one aggregate from the insert until commit,
# so that the outbox ids of one aggregate grow in commit order: the relay publishes each
# partition in id order, hence every aggregate in commit order. One round trip: the lock
# and the insert travel as one statement.
_INSERT = text(
    """
    WITH aggregate_lock AS (SELECT pg_advisory_xact_lock(:lock_key))
    INSERT INTO outbox (event_id, event_type, routing_key, aggregate_type, aggregate_id,
                        partition, schema_version, payload, headers, correlation_id,
                        traceparent, tracestate)
    SELECT :event_id, :event_type, :event_type, :aggregate_type, :aggregate_id,
           :partition, :schema_version, CAST(:payload AS jsonb), CAST(:headers AS jsonb),
           :correlation_id, :traceparent, :tracestate
    FROM aggregate_lock
    """
)


def aggregate_partition(aggregate_type: str, aggregate_id: str) -> int:
    """Stable partition of an aggregate (crc32, identical in every process)."""
    return zlib.crc32(f"{aggregate_type}:{aggregate_id}".encode()) % PARTITIONS


def _lock_key(aggregate_type: str, aggregate_id: str) -> int:
    # 63-bit signed key for pg_advisory_xact_lock(bigint); collisions only serialise.
    digest = zlib.crc32(aggregate_type.encode()) << 32 | zlib.crc32(aggregate_id.encode())
    return digest - (1 << 63) if digest >= 1 << 63 else digest


async def add_event(
    session: AsyncSession | AsyncConnection,
    event: Message,
    *,
    correlation_id: str | None = None,
    headers: Mapping[str, str] | None = None,
    event_id: uuid.UUID | None = None,
    trace: TraceHeaders | None = None,
) -> uuid.UUID:
    """Add ``event`` to the outbox inside ``session``'s open transaction (an ORM session or
    a Core connection).

    Fills in the event id, routing key, aggregate, partition, schema version, the
    correlation id (the one bound to the current request or message unless given) and the
    trace context (``trace`` if given, else the current span's or the one passed through:
    :mod:`shared.tracing`). Nothing is published if the transaction rolls back.
    """
    row = _row(event, correlation_id, headers, event_id, trace)
    await session.execute(_INSERT, row)
    return row["event_id"]  # type: ignore[no-any-return]


def _row(
    event: Message,
    correlation_id: str | None,
    headers: Mapping[str, str] | None,
    event_id: uuid.UUID | None,
    trace: TraceHeaders | None,
) -> dict[str, Any]:
    traceparent, tracestate = trace if trace is not None else tracing.outgoing()
    aggregate_id = event.aggregate_id
    return {
        "lock_key": _lock_key(event.aggregate_type, aggregate_id),
        "event_id": event_id or uuid.uuid4(),
        "event_type": event.event_type,
        "aggregate_type": event.aggregate_type,
        "aggregate_id": aggregate_id,
        "partition": aggregate_partition(event.aggregate_type, aggregate_id),
        "schema_version": event.schema_version,
        "payload": encode(event).decode(),
        "headers": json.dumps(dict(headers or {})),
        "correlation_id": correlation_id or correlation.current(),
        "traceparent": traceparent,
        "tracestate": tracestate,
    }


# Several events in one statement. Every aggregate's lock is taken before the first row is
# inserted (each row is joined with the one row of a count over the locks, which exists
# only once every lock is held), in key order, so two such writers cannot deadlock.
_INSERT_MANY = text(
    """
    WITH aggregate_locks AS MATERIALIZED (
        SELECT count(pg_advisory_xact_lock(k.key)) AS held
        FROM (SELECT DISTINCT key FROM unnest(CAST(:lock_keys AS bigint[])) AS u(key)
              ORDER BY key) AS k
    )
    INSERT INTO outbox (event_id, event_type, routing_key, aggregate_type, aggregate_id,
                        partition, schema_version, payload, headers, correlation_id,
                        traceparent, tracestate)
    SELECT e.event_id, e.event_type, e.event_type, e.aggregate_type, e.aggregate_id,
           e.partition, e.schema_version, CAST(e.payload AS jsonb), CAST(e.headers AS jsonb),
           e.correlation_id, e.traceparent, e.tracestate
    FROM aggregate_locks,
         unnest(CAST(:event_ids AS uuid[]), CAST(:event_types AS text[]),
                CAST(:aggregate_types AS text[]), CAST(:aggregate_ids AS text[]),
                CAST(:partitions AS smallint[]), CAST(:schema_versions AS integer[]),
                CAST(:payloads AS text[]), CAST(:header_sets AS text[]),
                CAST(:correlation_ids AS text[]), CAST(:traceparents AS text[]),
                CAST(:tracestates AS text[]))
         WITH ORDINALITY AS e(event_id, event_type, aggregate_type, aggregate_id, partition,
                              schema_version, payload, headers, correlation_id,
                              traceparent, tracestate, position)
    ORDER BY e.position
    """
)
_ARRAYS = {
    "lock_key": "lock_keys", "event_id": "event_ids", "event_type": "event_types",
    "aggregate_type": "aggregate_types", "aggregate_id": "aggregate_ids",
    "partition": "partitions", "schema_version": "schema_versions", "payload": "payloads",
    "headers": "header_sets", "correlation_id": "correlation_ids",
    "traceparent": "traceparents", "tracestate": "tracestates",
}
"""Each column of :func:`_row` and the array parameter of ``_INSERT_MANY`` that holds it."""


async def add_events(
    session: AsyncSession | AsyncConnection, events: Sequence[tuple[Message, Emitter]]
) -> list[uuid.UUID]:
    """Add several events to the outbox in one statement (one round trip), each with the
    correlation, causation and trace context of the :class:`Emitter` beside it: the
    messages of a batch, each causing its own follow-up. The same rows as
    :func:`add_event` would write one by one, in list order."""
    rows = [
        _row(event, emit.correlation_id, emit.headers, None, emit.trace)
        for event, emit in events
    ]
    if rows:
        await session.execute(
            _INSERT_MANY,
            {array: [row[column] for row in rows] for column, array in _ARRAYS.items()},
        )
    return [row["event_id"] for row in rows]


class Emit(Protocol):
    """Adds ``event`` to the outbox of ``session``'s database, in its open transaction, with
    the correlation and causation of whoever emits it; returns the event id."""

    async def __call__(self, session: AsyncSession, event: Message, /) -> uuid.UUID: ...


@dataclass(frozen=True)
class Emitter:
    """The one way events are emitted: :func:`add_event` with a correlation id and, for an
    event that a message caused, that message's id as the causation header."""

    correlation_id: str | None
    causation_id: str | None = None
    trace: TraceHeaders | None = None
    """The trace context the events carry; None: the current one (``tracing.outgoing``)."""

    @classmethod
    def current(cls) -> Emitter:
        """The emitter of the request or message being handled (:mod:`shared.correlation`);
        a request is the start of a chain, so its events have no causation."""
        return cls(correlation.current())

    @property
    def headers(self) -> dict[str, str] | None:
        return {H_CAUSATION_ID: self.causation_id} if self.causation_id else None

    async def __call__(self, session: AsyncSession | AsyncConnection, event: Message) -> uuid.UUID:
        return await add_event(
            session, event, correlation_id=self.correlation_id, headers=self.headers,
            trace=self.trace,
        )
