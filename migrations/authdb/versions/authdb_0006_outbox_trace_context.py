"""authdb: the outbox stores the W3C trace context of the transaction that wrote each event.

Revision ID: authdb_0006
Revises: authdb_0005
Create Date: 2026-11-29
"""

from __future__ import annotations

from migrations.outbox_ddl import add_outbox_trace_context, drop_outbox_trace_context

revision = "authdb_0006"
down_revision = "authdb_0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_outbox_trace_context()


def downgrade() -> None:
    drop_outbox_trace_context()
