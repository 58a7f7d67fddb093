"""The topology table, its derived queues, and the committed definitions.json."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shared import topology
from shared.broker import definitions_json
from shared.messaging import AGGREGATE_SLOTS, aggregate_slot

ROOT = Path(__file__).resolve().parents[2]


def test_committed_definitions_equal_the_generated_ones() -> None:
    committed = (ROOT / "infra/rabbitmq/definitions.json").read_text()
    assert committed == definitions_json(), "run: python -m amsctl topology export"


def test_every_consumer_gets_work_retry_and_dead_letter_queues() -> None:
    names = {q.name for q in topology.DEFAULT.queues}
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


def test_dead_letter_queue_is_quorum_without_delivery_limit_or_dead_lettering() -> None:
    args = topology.consumer_spec("saga").dead_letter_queue().arguments
    assert args == {"x-queue-type": "quorum"}


def test_dead_letter_policy_outranks_the_others_and_lifts_the_4x_default_limit() -> None:
    topo = topology.deployed(topology.parse_retry_delays("1s"), 2)
    dlq_policy = topology.DEAD_LETTER_POLICY
    assert dlq_policy in topo.policies
    assert all(p.priority < dlq_policy.priority for p in topo.policies if p != dlq_policy)
    pattern = re.compile(dlq_policy.pattern)
    dlqs = [q.name for q in topo.queues if pattern.search(q.name)]
    assert sorted(dlqs) == sorted(f"{s.name}.dlq" for s in topology.CONSUMERS)
    assert "delivery-limit" not in dlq_policy.definition  # 3.x: absent means unlimited
    assert topology.dead_letter_policy(3) == dlq_policy
    assert topology.dead_letter_policy(4).definition["delivery-limit"] == -1
    assert dlq_policy.definition["overflow"] == "reject-publish"  # never drop-head


def test_reading_is_refused_where_a_delivery_limit_would_count() -> None:
    from amsctl.dlq.broker import delivery_limit_in_effect as limit

    quorum = {"type": "quorum", "arguments": {"x-queue-type": "quorum"}}
    assert limit(quorum, 3) is None
    ours = {**quorum, "effective_policy_definition": {"overflow": "reject-publish"}}
    assert limit(ours, 3) is None
    assert limit(quorum, 4) == 20  # 4.x default
    assert limit({**quorum, "effective_policy_definition": {"delivery-limit": -1}}, 4) is None
    assert limit({**quorum, "effective_policy_definition": {"delivery-limit": 50}}, 3) == 50
    both = {"type": "quorum", "arguments": {"x-delivery-limit": 7},
            "effective_policy_definition": {"delivery-limit": 50}}
    assert limit(both, 3) == 7
    assert limit({"type": "classic", "arguments": {}}, 4) is None


def test_bindings_follow_the_consumer_table() -> None:
    keys = {(b.destination, b.routing_key) for b in topology.DEFAULT.bindings}
    assert ("profiles", "user.registered") in keys
    assert ("saga", "documents.deletion_failed") in keys
    assert ("documents", "documents.delete") in keys
    assert {b.exchange for b in topology.DEFAULT.bindings} == {"events", "replay"}
    assert [ex.name for ex in topology.DEFAULT.exchanges] == ["events", "replay"]


@pytest.mark.parametrize("partitions", [1, 3])
def test_the_replay_exchange_reaches_every_work_queue_and_nothing_else(partitions: int) -> None:
    topo = topology.deployed(topology.parse_retry_delays("5s"), partitions)
    replay = [b for b in topo.bindings if b.exchange == "replay"]
    assert all(b.routing_key == b.destination and b.destination_type == "queue" for b in replay)
    work = {n for spec in topology.CONSUMERS
            for n in spec.with_partitions(partitions).work_queue_names()}
    assert topo.replay_targets == work
    assert ("profiles.p2" in work) == (partitions == 3)
    assert not any(".retry." in n or n.endswith(".dlq") for n in topo.replay_targets)
    assert {ex.name: ex.type for ex in topo.exchanges}["replay"] == "direct"


def test_the_operator_may_publish_to_the_replay_exchange_only_and_read_dead_letters() -> None:
    perms = topology.OPERATOR_PERMISSIONS
    assert re.fullmatch(perms.configure, "") and not re.search(perms.configure, "profiles")
    names = ["events", "amq.default", "profiles", "profiles.dlq", "profiles.retry.5s", "x"]
    assert [n for n in [*names, "replay"] if re.search(perms.write, n)] == ["replay"]
    assert [n for n in names if re.search(perms.read, n)] == ["profiles.dlq"]


def test_partitioned_consumer_routes_aggregate_slots_to_single_active_partition_queues() -> None:
    spec = topology.consumer_spec("profiles").with_partitions(3)
    topo = topology.topology_of((spec,), topology.parse_retry_delays("5s"))
    exchanges = {ex.name: ex for ex in topo.exchanges}
    partitions = exchanges["profiles.partitions"]
    assert (partitions.type, partitions.internal) == ("headers", True)
    assert partitions.arguments == {"alternate-exchange": "profiles.unslotted"}
    assert (exchanges["profiles.unslotted"].type, exchanges["profiles.unslotted"].internal) == (
        "fanout", True
    )
    assert {q.name for q in topo.queues} == {
        "profiles.p0", "profiles.p1", "profiles.p2",
        "profiles.p0.retry.5s", "profiles.p1.retry.5s", "profiles.p2.retry.5s",
        "profiles.dlq",  # one place for the operator
    }
    p1 = spec.for_partition(1)
    work = p1.work_queue().arguments
    assert work["x-single-active-consumer"] is True
    assert work["x-dead-letter-routing-key"] == "profiles.dlq"
    retry = p1.retry_queue(topology.RetryDelay.parse("5s")).arguments
    assert retry["x-dead-letter-routing-key"] == "profiles.p1"  # back to the same partition
    into = {(b.exchange, b.destination, b.routing_key, b.destination_type)
            for b in topo.bindings if b.exchange == "events"}
    assert ("events", "profiles.partitions", "user.registered", "exchange") in into
    slots = {b.arguments["aggregate-slot"]: b.destination
             for b in topo.bindings if b.exchange == "profiles.partitions"}
    # Every one of the 64 slots is bound exactly once, slot s to partition s mod 3.
    assert slots == {str(s): f"profiles.p{s % 3}" for s in range(64)}
    assert all(b.arguments["x-match"] == "all"
               for b in topo.bindings if b.exchange == "profiles.partitions")
    assert [(b.exchange, b.destination) for b in topo.bindings
            if b.exchange == "profiles.unslotted"] == [("profiles.unslotted", "profiles.p0")]
    assert not any(b.destination == "profiles" for b in topo.bindings)
    policy = re.compile(spec.policy().pattern)
    assert all(policy.match(n) for n in ("profiles", "profiles.p0", "profiles.p12"))
    assert not any(policy.match(n) for n in ("profiles.dlq", "profiles.p1.retry.5s", "profiles2"))


def test_aggregate_slot_is_stable_across_processes_and_releases() -> None:
    # CRC-32, not Python's salted hash(): fixed values, whatever the process.
    assert aggregate_slot("user-42") == "51"
    assert aggregate_slot("00000000-0000-0000-0000-000000000001") == "31"
    slots = {aggregate_slot(f"agg-{i}") for i in range(5000)}
    assert slots == {str(s) for s in range(AGGREGATE_SLOTS)}


def test_ocr_is_not_partitioned_and_partition_numbers_are_checked() -> None:
    assert topology.consumer_spec("ocr").with_partitions(4).queue_name == "ocr"
    deployed = topology.deployed(topology.parse_retry_delays("5s"), partitions=2)
    assert "ocr" in {q.name for q in deployed.queues}
    assert "saga.p1" in {q.name for q in deployed.queues}
    with pytest.raises(ValueError, match="partitions 0 to 1"):
        topology.consumer_spec("saga").with_partitions(2).for_partition(2)
    with pytest.raises(ValueError, match="1 to 64"):
        topology.consumer_spec("saga").with_partitions(0)


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


def test_a_dead_letter_from_the_broker_replays_into_the_queue_it_died_in() -> None:
    from amsctl.dlq.model import parse_dead_letter

    # The delivery-limit backstop: no x-ams-* headers, only the broker's x-death.
    crashed = parse_dead_letter(
        "profiles.dlq", 0, {"x-death": [{"queue": "profiles.p1", "reason": "delivery_limit"}]},
        b"{}", {"type": "user.registered", "message_id": "m1"},
    )
    assert crashed.failed_queue == "profiles.p1"
    legacy = parse_dead_letter("profiles.dlq", 0, {}, b"{}", {"type": "user.registered"})
    assert legacy.failed_queue == "profiles"
