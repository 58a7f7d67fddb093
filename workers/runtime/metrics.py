"""Prometheus metrics of the consumer runtime (prefix ``ams_worker_``), labelled by consumer
and by the queue it consumes (the work queue, or a partition queue ``NAME.pN``)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

HANDLED = Counter(
    "ams_worker_messages_handled_total",
    "Messages whose effect committed (or that were recognised as duplicates), counted "
    "before their ack (a crash in between counts the redelivered copy again, as a duplicate).",
    ["consumer", "queue", "event_type", "duplicate"],
)
FAILED = Counter(
    "ams_worker_messages_failed_total",
    "Handling attempts that raised, by what became of the message: retried (sent to a "
    "delayed retry queue), dead_lettered (permanent error or attempts exhausted; see "
    "reason) or requeued (the copy could not be published; the broker redelivers it).",
    ["consumer", "queue", "event_type", "outcome", "reason", "error_type"],
)
HANDLE_DURATION = Histogram(
    "ams_worker_handle_duration_seconds",
    "From delivery to ack of a handled message (a batch's messages share its duration).",
    ["consumer", "queue"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
