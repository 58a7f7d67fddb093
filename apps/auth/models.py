"""authdb tables owned by the auth service (the outbox and inbox live in ``outbox.schema``)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

# The statuses live in a dependency-free module (one source; `amsctl saga --help` lists them
# without SQLAlchemy) and are re-exported here beside the tables that store them.
from shared.statuses import SagaStatus, StepStatus, UserStatus

__all__ = [
    "SagaStatus", "StepStatus", "UserStatus", "metadata", "refresh_families", "refresh_tokens",
    "saga_steps", "sagas", "signing_keys", "users",
]

metadata = sa.MetaData()


users = sa.Table(
    "users",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("email", sa.Text, nullable=False, unique=True),
    sa.Column("password_hash", sa.Text, nullable=False),
    sa.Column("display_name", sa.Text),
    sa.Column("roles", pg.ARRAY(sa.Text), nullable=False, server_default=sa.text("'{user}'")),
    sa.Column("status", sa.Text, nullable=False, server_default=UserStatus.ACTIVE.value),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Column(
        "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
)

refresh_families = sa.Table(
    "refresh_families",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("user_id", pg.UUID(as_uuid=True), sa.ForeignKey("users.id"), nullable=False),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True)),
    sa.Column("revoked_reason", sa.Text),
)

refresh_tokens = sa.Table(
    "refresh_tokens",
    metadata,
    sa.Column("jti", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column(
        "family_id", pg.UUID(as_uuid=True), sa.ForeignKey("refresh_families.id"), nullable=False
    ),
    sa.Column(
        "issued_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Column("used_at", sa.DateTime(timezone=True)),
    sa.Column("replaced_by", pg.UUID(as_uuid=True)),
)

signing_keys = sa.Table(
    "signing_keys",
    metadata,
    sa.Column("kid", sa.Text, primary_key=True),
    sa.Column("algorithm", sa.Text, nullable=False),
    sa.Column("private_pem", sa.Text, nullable=False),
    sa.Column("public_jwk", pg.JSONB, nullable=False),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Column("retired_at", sa.DateTime(timezone=True)),
)

sagas = sa.Table(
    "sagas",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("kind", sa.Text, nullable=False, server_default="user_deletion"),
    sa.Column("user_id", pg.UUID(as_uuid=True), sa.ForeignKey("users.id"), nullable=False),
    sa.Column("requested_by", pg.UUID(as_uuid=True)),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("current_step", sa.Text),
    sa.Column("step_deadline", sa.DateTime(timezone=True)),
    sa.Column("reason", sa.Text),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Column(
        "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
)

saga_steps = sa.Table(
    "saga_steps",
    metadata,
    sa.Column("saga_id", pg.UUID(as_uuid=True), sa.ForeignKey("sagas.id"), primary_key=True),
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("command_id", pg.UUID(as_uuid=True)),
    sa.Column("detail", sa.Text),
    sa.Column(
        "started_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Column("deadline", sa.DateTime(timezone=True)),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("late_replies", sa.Integer, nullable=False, server_default="0"),
)
