"""authdb: the operator audit trail (append-only).

Every operator action (``amsctl``, the admin console, admin API actions such as a legal
hold) is one row: who, what, on which target, when, with which outcome and details.
The table refuses UPDATE, DELETE and TRUNCATE through triggers, for every role,
including its owner; the service roles only get INSERT and SELECT on it.

The DDL is frozen here as plain SQL, independent of ``apps.auth.audit``: a later change
to that module must come with a migration of its own.

Revision ID: authdb_0005
Revises: authdb_0004
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

revision = "authdb_0005"
down_revision = "authdb_0004"
branch_labels = None
depends_on = None

_UPGRADE = (
    """
    CREATE TABLE operator_audit (
        id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at          timestamptz NOT NULL DEFAULT clock_timestamp(),
        actor       text NOT NULL CHECK (length(actor) BETWEEN 1 AND 320),
        source      text NOT NULL CHECK (source IN ('cli', 'console', 'api')),
        action      text NOT NULL CHECK (action ~ '^[a-z][a-z0-9_.-]{0,99}$'),
        target      text CHECK (length(target) <= 1000),
        outcome     text NOT NULL CHECK (outcome IN ('ok', 'partial', 'failed', 'denied')),
        details     jsonb NOT NULL DEFAULT '{}'::jsonb
                    CHECK (jsonb_typeof(details) = 'object' AND pg_column_size(details) <= 65536)
    )
    """,
    "CREATE INDEX operator_audit_at_idx ON operator_audit (at DESC, id DESC)",
    "CREATE INDEX operator_audit_action_idx ON operator_audit (action, at DESC)",
    "CREATE INDEX operator_audit_actor_idx ON operator_audit (actor, at DESC)",
    "CREATE INDEX operator_audit_target_idx ON operator_audit (target, at DESC)",
    """
    CREATE FUNCTION operator_audit_append_only() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'operator_audit is append-only: % refused', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END
    $$
    """,
    """
    CREATE TRIGGER operator_audit_no_change BEFORE UPDATE OR DELETE ON operator_audit
    FOR EACH ROW EXECUTE FUNCTION operator_audit_append_only()
    """,
    """
    CREATE TRIGGER operator_audit_no_truncate BEFORE TRUNCATE ON operator_audit
    FOR EACH STATEMENT EXECUTE FUNCTION operator_audit_append_only()
    """,
)

_DOWNGRADE = (
    "DROP TABLE operator_audit",
    "DROP FUNCTION operator_audit_append_only()",
)


def upgrade() -> None:
    for statement in _UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in _DOWNGRADE:
        op.execute(statement)
