"""Prometheus metrics of the consumer runtime (one set per process, labelled by consumer)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

HANDLED = Counter(
    "ams_worker_messages_handled_total",
    "Messages whose effect committed (or that were recognised as duplicates) and were acked.",
    ["consumer", "event_type", "duplicate"],
)
FAILED = Counter(
    "ams_worker_messages_failed_total",
    "Handling attempts that raised.",
    ["consumer", "event_type", "error_type"],
)
RETRIED = Counter(
    "ams_worker_messages_retried_total",
    "Messages sent to a delayed retry queue.",
    ["consumer", "event_type"],
)
DEAD_LETTERED = Counter(
    "ams_worker_messages_dead_lettered_total",
    "Messages parked in the consumer's dead-letter queue.",
    ["consumer", "event_type", "reason"],
)
LATENCY = Histogram(
    "ams_worker_handling_seconds",
    "Time from delivery to ack, per message.",
    ["consumer"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
