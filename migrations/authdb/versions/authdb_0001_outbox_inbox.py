"""authdb: outbox and inbox tables.

Revision ID: authdb_0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

from migrations.outbox_ddl import create_outbox_and_inbox, drop_outbox_and_inbox

revision = "authdb_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_outbox_and_inbox()


def downgrade() -> None:
    drop_outbox_and_inbox()
