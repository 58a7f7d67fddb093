"""apidb: vacuum the outbox after a fixed number of deleted rows (a queue table).

Revision ID: apidb_0004
Revises: apidb_0003
Create Date: 2026-11-23
"""

from __future__ import annotations

from migrations.outbox_ddl import reset_outbox_autovacuum, tune_outbox_autovacuum

revision = "apidb_0004"
down_revision = "apidb_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    tune_outbox_autovacuum()


def downgrade() -> None:
    reset_outbox_autovacuum()
