"""admindb: only one in-flight transaction at a time sends the outbox NOTIFY (commits of
notifying transactions are serialised by PostgreSQL; see migrations/outbox_ddl.py).

Revision ID: admindb_0006
Revises: admindb_0005
Create Date: 2026-11-29
"""

from __future__ import annotations

from migrations.outbox_ddl import (
    notify_from_every_transaction,
    notify_from_one_transaction_at_a_time,
)

revision = "admindb_0006"
down_revision = "admindb_0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    notify_from_one_transaction_at_a_time()


def downgrade() -> None:
    notify_from_every_transaction()
