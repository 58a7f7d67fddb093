"""Shared migration step: the outbox and inbox tables every database has."""

from __future__ import annotations

from alembic import op

from outbox.schema import NOTIFY_TRIGGER_DDL, inbox, outbox


def create_outbox_and_inbox() -> None:
    bind = op.get_bind()
    outbox.create(bind)
    inbox.create(bind)
    for statement in NOTIFY_TRIGGER_DDL:
        op.execute(statement)


def drop_outbox_and_inbox() -> None:
    op.execute("DROP TRIGGER IF EXISTS outbox_notify ON outbox")
    op.execute("DROP FUNCTION IF EXISTS outbox_notify()")
    bind = op.get_bind()
    inbox.drop(bind)
    outbox.drop(bind)
