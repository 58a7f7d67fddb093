"""authdb tables owned by the auth service (the outbox and inbox live in ``outbox.schema``)."""

from __future__ import annotations

from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

metadata = sa.MetaData()


class UserStatus(StrEnum):
    """An account's life cycle: ``deleting`` while its deletion saga runs."""

    ACTIVE = "active"
    DELETING = "deleting"
    DELETED = "deleted"


class SagaStatus(StrEnum):
    """``running`` and ``compensating`` are in flight; the other three are final."""

    RUNNING = "running"
    COMPENSATING = "compensating"
    COMPLETED = "completed"
    COMPENSATED = "compensated"
    COMPENSATION_FAILED = "compensation_failed"

    @property
    def in_flight(self) -> bool:
        return self in (SagaStatus.RUNNING, SagaStatus.COMPENSATING)


class StepStatus(StrEnum):
    """A saga step: ``pending`` until its reply, its deadline, or a local action."""

    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMED_OUT = "timed_out"


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
