"""authdb: vacuum the outbox after a fixed number of deleted rows (a queue table).

Revision ID: authdb_0004
Revises: authdb_0003
Create Date: 2026-11-23
"""

from __future__ import annotations

from migrations.outbox_ddl import reset_outbox_autovacuum, tune_outbox_autovacuum

revision = "authdb_0004"
down_revision = "authdb_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    tune_outbox_autovacuum()


def downgrade() -> None:
    reset_outbox_autovacuum()
