"""authdb: users, refresh-token families and tokens, signing keys.

Revision ID: authdb_0002
Revises: authdb_0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "authdb_0002"
down_revision = "authdb_0001"
branch_labels = None
depends_on = None

_NOW = sa.text("now()")


def _ts(name: str, *, nullable: bool = False, now: bool = False) -> sa.Column[object]:
    return sa.Column(
        name, sa.DateTime(timezone=True), nullable=nullable, server_default=_NOW if now else None
    )


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("email", sa.Text, nullable=False),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("display_name", sa.Text),
        sa.Column("roles", pg.ARRAY(sa.Text), nullable=False, server_default=sa.text("'{user}'")),
        sa.Column("status", sa.Text, nullable=False, server_default="active"),
        _ts("created_at", now=True),
        _ts("updated_at", now=True),
        sa.CheckConstraint(
            "status IN ('active', 'deleting', 'deleted')", name="users_status_check"
        ),
        sa.CheckConstraint("email = lower(email)", name="users_email_normalised"),
        sa.UniqueConstraint("email", name="users_email_key"),
    )
    op.create_table(
        "refresh_families",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("user_id", pg.UUID(as_uuid=True), sa.ForeignKey("users.id"), nullable=False),
        _ts("created_at", now=True),
        _ts("expires_at"),
        _ts("revoked_at", nullable=True),
        sa.Column("revoked_reason", sa.Text),
    )
    op.create_index("refresh_families_user_idx", "refresh_families", ["user_id"])
    op.create_table(
        "refresh_tokens",
        sa.Column("jti", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column(
            "family_id",
            pg.UUID(as_uuid=True),
            sa.ForeignKey("refresh_families.id"),
            nullable=False,
        ),
        _ts("issued_at", now=True),
        _ts("used_at", nullable=True),
    )
    op.create_index("refresh_tokens_family_idx", "refresh_tokens", ["family_id"])
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.Text, primary_key=True),
        sa.Column("algorithm", sa.Text, nullable=False),
        sa.Column("private_pem", sa.Text, nullable=False),
        sa.Column("public_jwk", pg.JSONB, nullable=False),
        _ts("created_at", now=True),
        _ts("retired_at", nullable=True),
    )


def downgrade() -> None:
    op.drop_table("signing_keys")
    op.drop_table("refresh_tokens")
    op.drop_table("refresh_families")
    op.drop_table("users")
