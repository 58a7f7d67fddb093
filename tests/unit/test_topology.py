"""The topology table, its derived queues, and the committed definitions.json."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared import topology
from shared.broker import definitions_json

ROOT = Path(__file__).resolve().parents[2]


def test_committed_definitions_equal_the_generated_ones() -> None:
    committed = (ROOT / "infra/rabbitmq/definitions.json").read_text()
    assert committed == definitions_json(), "run: python -m amsctl topology export"


def test_every_consumer_gets_work_retry_and_dead_letter_queues() -> None:
    names = {q.name for q in topology.QUEUES}
    for spec in topology.CONSUMERS:
        assert {spec.name, f"{spec.name}.dlq", f"{spec.name}.retry.5s"} <= names


def test_work_queue_is_quorum_with_delivery_limit_and_dead_letters_to_its_dlq() -> None:
    args = topology.consumer_spec("profiles").work_queue().arguments
    assert args["x-queue-type"] == "quorum"
    assert args["x-delivery-limit"] == topology.DELIVERY_LIMIT
    assert args["x-dead-letter-exchange"] == ""
    assert args["x-dead-letter-routing-key"] == "profiles.dlq"


def test_retry_queue_waits_then_routes_back_to_its_work_queue_only() -> None:
    spec = topology.consumer_spec("ocr")
    queue = spec.retry_queue(topology.RetryDelay.parse("30s"))
    assert queue.name == "ocr.retry.30s"
    assert queue.arguments["x-message-ttl"] == 30_000
    assert queue.arguments["x-dead-letter-exchange"] == ""  # default exchange: one queue
    assert queue.arguments["x-dead-letter-routing-key"] == "ocr"


def test_dead_letter_queue_is_classic_without_delivery_limit() -> None:
    args = topology.consumer_spec("saga").dead_letter_queue().arguments
    assert args == {"x-queue-type": "classic"}


def test_bindings_follow_the_consumer_table() -> None:
    keys = {(b.queue, b.routing_key) for b in topology.BINDINGS}
    assert ("profiles", "user.registered") in keys
    assert ("saga", "documents.deletion_failed") in keys
    assert ("documents", "documents.delete") in keys
    assert all(b.exchange == "events" for b in topology.BINDINGS)


@pytest.mark.parametrize(
    ("text", "labels", "ms"),
    [
        ("1s,5s,30s", ["1s", "5s", "30s"], [1000, 5000, 30000]),
        ("300ms, 2m", ["300ms", "2m"], [300, 120000]),
    ],
)
def test_retry_delays_parse(text: str, labels: list[str], ms: list[int]) -> None:
    delays = topology.parse_retry_delays(text)
    assert [d.label for d in delays] == labels
    assert [d.milliseconds for d in delays] == ms


@pytest.mark.parametrize("text", ["", "5", "0s", "5 days", "1s,x"])
def test_invalid_retry_delays_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        topology.parse_retry_delays(text)
