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


# The outbox is a queue table: every row is inserted once and deleted soon after. Left to
# the default thresholds (20 % of the table), dead rows pile up at the head of the id
# index that every claim walks, and claims slow down under sustained load. Vacuum it
# after a fixed number of deleted rows, without cost-based throttling.
OUTBOX_AUTOVACUUM = (
    "autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 2000, "
    "autovacuum_vacuum_cost_delay = 0, autovacuum_analyze_scale_factor = 0, "
    "autovacuum_analyze_threshold = 5000"
)


def tune_outbox_autovacuum() -> None:
    op.execute(f"ALTER TABLE outbox SET ({OUTBOX_AUTOVACUUM})")


def reset_outbox_autovacuum() -> None:
    names = ", ".join(part.split("=")[0].strip() for part in OUTBOX_AUTOVACUUM.split(","))
    op.execute(f"ALTER TABLE outbox RESET ({names})")


# The W3C trace context of the transaction that wrote each event (shared.tracing), beside
# correlation_id; the relay publishes it as AMQP headers. Nullable, no default: adding the
# columns rewrites nothing. Frozen here as SQL. IF NOT EXISTS: a database created after
# this change got the columns from its first migration already (create_outbox_and_inbox
# builds the outbox from outbox.schema).
def add_outbox_trace_context() -> None:
    op.execute(
        "ALTER TABLE outbox ADD COLUMN IF NOT EXISTS traceparent text, "
        "ADD COLUMN IF NOT EXISTS tracestate text"
    )


def drop_outbox_trace_context() -> None:
    op.execute(
        "ALTER TABLE outbox DROP COLUMN IF EXISTS tracestate, DROP COLUMN IF EXISTS traceparent"
    )
