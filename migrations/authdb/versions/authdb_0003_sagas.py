"""authdb: the user-deletion saga (sagas + saga_steps).

Revision ID: authdb_0003
Revises: authdb_0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "authdb_0003"
down_revision = "authdb_0002"
branch_labels = None
depends_on = None

_NOW = sa.text("now()")
_ACTIVE = "status IN ('running', 'compensating')"


def _ts(name: str, *, nullable: bool = False, now: bool = False) -> sa.Column[object]:
    return sa.Column(
        name, sa.DateTime(timezone=True), nullable=nullable, server_default=_NOW if now else None
    )


def upgrade() -> None:
    op.create_table(
        "sagas",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("kind", sa.Text, nullable=False, server_default="user_deletion"),
        sa.Column("user_id", pg.UUID(as_uuid=True), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("requested_by", pg.UUID(as_uuid=True)),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("current_step", sa.Text),
        _ts("step_deadline", nullable=True),
        sa.Column("reason", sa.Text),
        _ts("created_at", now=True),
        _ts("updated_at", now=True),
        _ts("finished_at", nullable=True),
        sa.CheckConstraint(
            "status IN ('running', 'compensating', 'completed', 'compensated',"
            " 'compensation_failed')",
            name="sagas_status_check",
        ),
    )
    op.create_index("sagas_status_idx", "sagas", ["status", "created_at"])
    op.create_index("sagas_user_idx", "sagas", ["user_id"])
    # At most one deletion in flight per user; the sweeper scans only active sagas.
    op.create_index(
        "sagas_one_active_per_user", "sagas", ["user_id"], unique=True,
        postgresql_where=sa.text(_ACTIVE),
    )
    op.create_index(
        "sagas_deadline_idx", "sagas", ["step_deadline"], postgresql_where=sa.text(_ACTIVE)
    )
    op.create_table(
        "saga_steps",
        sa.Column("saga_id", pg.UUID(as_uuid=True), sa.ForeignKey("sagas.id"), primary_key=True),
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("command_id", pg.UUID(as_uuid=True)),
        sa.Column("detail", sa.Text),
        _ts("started_at", now=True),
        _ts("deadline", nullable=True),
        _ts("finished_at", nullable=True),
        sa.Column("late_replies", sa.Integer, nullable=False, server_default="0"),
        sa.CheckConstraint("kind IN ('action', 'compensation')", name="saga_steps_kind_check"),
        sa.CheckConstraint(
            "status IN ('pending', 'completed', 'failed', 'timed_out')",
            name="saga_steps_status_check",
        ),
    )


def downgrade() -> None:
    op.drop_table("saga_steps")
    op.drop_table("sagas")
