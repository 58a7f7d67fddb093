"""apidb: profiles can be archived (soft-deleted) by the deletion saga and restored.

Revision ID: apidb_0003
Revises: apidb_0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "apidb_0003"
down_revision = "apidb_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("profiles", sa.Column("deleted_at", sa.DateTime(timezone=True)))
    op.add_column("profiles", sa.Column("deleted_by_saga", pg.UUID(as_uuid=True)))


def downgrade() -> None:
    op.drop_column("profiles", "deleted_by_saga")
    op.drop_column("profiles", "deleted_at")
