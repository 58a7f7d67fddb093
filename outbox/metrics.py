"""Prometheus metrics of the relay, labelled by database (prefix ``ams_outbox_``).

Gauges of the outbox table (backlog, parked, oldest unsent age) are refreshed every 5 s by
each relay copy, so several copies report the same figure: aggregate them with ``max by
(database)``. Counters and the latency histogram are per copy: ``sum by (database)``.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PUBLISHED = Counter(
    "ams_outbox_published_total", "Events confirmed by the broker.", ["database"]
)
FAILED = Counter(
    "ams_outbox_publish_failures_total",
    "Publish attempts the broker rejected (nack or unroutable).",
    ["database"],
)
PARKED = Counter(
    "ams_outbox_parked_total", "Events parked after their last attempt.", ["database"]
)
BACKLOG = Gauge(
    "ams_outbox_backlog_events", "Unsent events (parked ones excluded).", ["database"]
)
PARKED_NOW = Gauge(
    "ams_outbox_parked_events", "Parked events waiting for an operator.", ["database"]
)
OLDEST_AGE = Gauge(
    "ams_outbox_oldest_unsent_age_seconds", "Age of the oldest unsent event.", ["database"]
)
OWNED_PARTITIONS = Gauge(
    "ams_outbox_owned_partitions", "Outbox partitions this relay copy owns.", ["database"]
)
BROKER_UP = Gauge(
    "ams_outbox_broker_connected", "1 while the relay is connected to RabbitMQ.", ["database"]
)
LATENCY = Histogram(
    "ams_outbox_commit_to_confirm_seconds",
    "From the outbox row's insert to the broker's publisher confirm.",
    ["database"],
    buckets=(
        0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.05,
        0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
    ),
)
