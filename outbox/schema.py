"""The ``outbox`` and ``inbox`` tables, identical in authdb, apidb and admindb.

``outbox``: one row per event written in a business transaction. The relay deletes a
row only after the broker confirmed it. ``partition`` (a hash of the aggregate) lets
several relay copies share the work while each aggregate is published by one relay at a
time. A row that keeps failing carries ``attempts``/``next_attempt_at``/``last_error``
and finally ``parked_at``.

``inbox``: one row per message a consumer has applied, written in the same transaction as
the effect; the primary key makes a duplicate recognisable, not guessed.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

PARTITIONS = 16
"""Outbox partitions. Fixed: rows store their partition, so changing it needs a drained outbox."""

NOTIFY_CHANNEL = "outbox_events"
"""LISTEN/NOTIFY channel the insert trigger signals (at most one notifying transaction at a
time, see NOTIFIER_LOCK)."""

NOTIFIER_LOCK = (0x0A75_0003, 0)
"""Transaction-scoped advisory lock the outbox trigger tries (never waits for) as the
transaction commits (a deferred constraint trigger): PostgreSQL serialises the commits of
notifying transactions, WAL flush included, so only the holder notifies and the others
commit in parallel; the holder's notification, the relay's next claim or its poll picks
their rows up. Frozen into the trigger by the ``*_outbox_notify_at_commit`` migrations (a
unit test keeps them equal)."""

metadata = sa.MetaData()

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("event_id", pg.UUID(as_uuid=True), nullable=False, unique=True),
    sa.Column("event_type", sa.Text, nullable=False),
    sa.Column("routing_key", sa.Text, nullable=False),
    sa.Column("aggregate_type", sa.Text, nullable=False),
    sa.Column("aggregate_id", sa.Text, nullable=False),
    sa.Column("partition", sa.SmallInteger, nullable=False),
    sa.Column("schema_version", sa.Integer, nullable=False),
    sa.Column("payload", pg.JSONB, nullable=False),
    sa.Column("headers", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("correlation_id", sa.Text),
    # W3C trace context of the writing transaction (shared.tracing), published as headers.
    sa.Column("traceparent", sa.Text),
    sa.Column("tracestate", sa.Text),
    sa.Column(
        "created_at",
        sa.DateTime(timezone=True),
        nullable=False,
        server_default=sa.text("clock_timestamp()"),
    ),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column(
        "next_attempt_at",
        sa.DateTime(timezone=True),
        nullable=False,
        server_default=sa.text("'-infinity'"),
    ),
    sa.Column("last_error", sa.Text),
    sa.Column("parked_at", sa.DateTime(timezone=True)),
    # The relay's claim: rows of owned partitions in id order, skipping parked ones.
    sa.Index("outbox_claim_idx", "partition", "id", postgresql_where=sa.text("parked_at IS NULL")),
    # Aggregates whose head event is backing off: later events of them wait.
    sa.Index(
        "outbox_retrying_idx",
        "aggregate_type",
        "aggregate_id",
        "id",
        postgresql_where=sa.text("attempts > 0 AND parked_at IS NULL"),
    ),
)

inbox = sa.Table(
    "inbox",
    metadata,
    sa.Column("consumer", sa.Text, primary_key=True),
    sa.Column("message_id", sa.Text, primary_key=True),
    sa.Column("event_type", sa.Text, nullable=False),
    sa.Column(
        "processed_at",
        sa.DateTime(timezone=True),
        nullable=False,
        server_default=sa.text("clock_timestamp()"),
    ),
    sa.Index("inbox_processed_at_idx", "processed_at"),
)
