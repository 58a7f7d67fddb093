"""authdb: the outbox trigger tries the notifier lock when the transaction commits (a
deferred constraint trigger), so a slow open transaction no longer mutes the others'
notifications (see migrations/outbox_ddl.py).

Revision ID: authdb_0009
Revises: authdb_0008
Create Date: 2026-11-29
"""

from __future__ import annotations

from migrations.outbox_ddl import notify_at_commit, notify_at_insert

revision = "authdb_0009"
down_revision = "authdb_0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    notify_at_commit()


def downgrade() -> None:
    notify_at_insert()
