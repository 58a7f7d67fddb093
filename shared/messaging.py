"""Names shared by every producer and consumer of the ``events`` exchange.

AMQP properties carry the identity of a message (``message_id`` = event id, ``type`` =
event type, ``content_type``, ``timestamp``, persistent delivery mode); these headers
carry the rest. Code refers to these constants, never to a string typed inline.
"""

from __future__ import annotations

import zlib

EVENTS_EXCHANGE = "events"
"""The one durable topic exchange every event goes through."""

REPLAY_EXCHANGE = "replay"
"""The direct exchange dead letters are replayed through (routing key = the work queue's
name); the only exchange the operator's broker user may publish to (:mod:`shared.topology`)."""

CONTENT_TYPE = "application/json"

H_CORRELATION_ID = "x-correlation-id"
"""Follows one request through API -> outbox -> relay -> consumer -> follow-up events."""
H_CAUSATION_ID = "x-causation-id"
"""message_id of the message whose handling produced this one."""
H_AGGREGATE_TYPE = "x-aggregate-type"
H_AGGREGATE_ID = "x-aggregate-id"
H_AGGREGATE_SLOT = "aggregate-slot"
"""Which of :data:`AGGREGATE_SLOTS` slots the aggregate is in (a decimal string); a
partitioned consumer's headers exchange routes on it (:mod:`shared.topology`). No ``x-``
prefix: a headers exchange ignores binding arguments whose names start with ``x-``."""
AGGREGATE_SLOTS = 64

H_TRACEPARENT = "traceparent"
"""W3C trace context of the transaction that wrote the event (:mod:`shared.tracing`)."""
H_TRACESTATE = "tracestate"
H_SCHEMA_VERSION = "x-schema-version"
H_PRODUCER = "x-producer"
"""Logical database (authdb, apidb, admindb) whose outbox published the event."""

# --- failure and replay headers (set by the consumer runtime and amsctl) ------------------
H_ATTEMPTS = "x-ams-attempts"
"""Failed attempts so far (our own count; ``x-death`` is not relied upon)."""
H_FAILED_QUEUE = "x-ams-failed-queue"
"""Work queue the message failed in; a replay goes back there and nowhere else."""
H_FAILED_ROUTING_KEY = "x-ams-failed-routing-key"
H_ERROR_TYPE = "x-ams-error-type"
H_ERROR_MESSAGE = "x-ams-error-message"
H_ERROR_WHERE = "x-ams-error-where"
"""``module:function:line`` where the error was raised (part of the failure fingerprint)."""
H_TRACEBACK = "x-ams-traceback"
"""A short traceback (last frames, bounded length)."""
H_FIRST_FAILURE_AT = "x-ams-first-failure-at"
H_LAST_FAILURE_AT = "x-ams-last-failure-at"
H_REPLAYS = "x-ams-replays"
"""Replay history: a list of ``{"at", "by", "from"}`` tables appended by ``amsctl dlq replay``."""


def aggregate_slot(aggregate_id: str) -> str:
    """The slot of an aggregate: CRC-32 of its id, so the same in every process and release."""
    return str(zlib.crc32(aggregate_id.encode()) % AGGREGATE_SLOTS)
