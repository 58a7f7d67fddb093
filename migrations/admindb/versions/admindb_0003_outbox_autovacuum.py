"""admindb: vacuum the outbox after a fixed number of deleted rows (a queue table).

Revision ID: admindb_0003
Revises: admindb_0002
Create Date: 2026-11-23
"""

from __future__ import annotations

from migrations.outbox_ddl import reset_outbox_autovacuum, tune_outbox_autovacuum

revision = "admindb_0003"
down_revision = "admindb_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    tune_outbox_autovacuum()


def downgrade() -> None:
    reset_outbox_autovacuum()
