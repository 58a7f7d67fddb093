"""apidb: the outbox stores the W3C trace context of the transaction that wrote each event.

``traceparent`` and ``tracestate`` sit beside ``correlation_id``; the relay publishes them as
AMQP headers (:mod:`shared.tracing`). Nullable, no default: adding them rewrites nothing.

Frozen DDL. ``IF NOT EXISTS``: a database created after this change got the columns from
``apidb_0001`` already (it creates the outbox from ``outbox.schema``).

Revision ID: apidb_0005
Revises: apidb_0004
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

revision = "apidb_0005"
down_revision = "apidb_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "ALTER TABLE outbox ADD COLUMN IF NOT EXISTS traceparent text, "
        "ADD COLUMN IF NOT EXISTS tracestate text"
    )


def downgrade() -> None:
    op.execute(
        "ALTER TABLE outbox DROP COLUMN IF EXISTS tracestate, DROP COLUMN IF EXISTS traceparent"
    )
