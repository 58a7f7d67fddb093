"""What the relay reads from the outbox: one row, ready to publish."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import NamedTuple


class OutboxRow(NamedTuple):
    """A named tuple, not a dataclass: the relay builds thousands a second straight from
    the claim's records (``OutboxRow._make(record)``, in CLAIM_SQL's column order), and a
    frozen dataclass's ``__init__`` cost more than encoding the row's frames."""

    id: int
    event_id: uuid.UUID
    event_type: str
    routing_key: str
    aggregate_type: str
    aggregate_id: str
    schema_version: int
    payload: str
    """The JSON body exactly as stored (jsonb rendered as text)."""
    headers: str
    """Extra headers as a JSON object text ('{}' when none)."""
    correlation_id: str | None
    traceparent: str | None
    """W3C trace context of the transaction that wrote the event (None outside a trace)."""
    tracestate: str | None
    created_at: datetime
    attempts: int
