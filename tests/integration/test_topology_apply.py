"""``amsctl topology apply`` on a live broker: idempotent, tolerant of existing queues."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import aio_pika
import pytest

from shared.config import Settings
from shared.messaging import H_AGGREGATE_SLOT, aggregate_slot
from shared.rabbitmq_admin import ManagementClient
from shared.topology_apply import apply_topology, vhost_of
from tests.support import isolated_settings


@pytest.fixture
def topo_settings() -> Iterator[Settings]:
    with isolated_settings("topo", migrate=False) as settings:
        yield settings


async def test_apply_twice_and_over_a_queue_with_other_arguments(topo_settings: Settings) -> None:
    settings = topo_settings
    connection = await aio_pika.connect(settings.broker.url)
    channel = await connection.channel()
    # An older deployment declared the work queue with another delivery limit.
    await channel.declare_queue(
        "ocr", durable=True, arguments={"x-queue-type": "quorum", "x-delivery-limit": 5}
    )
    await connection.close()

    first = await apply_topology(settings)
    second = await apply_topology(settings)
    assert "kept existing queue(s) with other arguments: ocr" in first
    assert "24 queue(s)" in second
    with ManagementClient(settings.broker.management_url) as mgmt:
        vhost = vhost_of(settings.broker.url)
        queues = {q["name"]: q for q in mgmt.queues(vhost)}
        policies = mgmt._request("GET", f"/policies/{vhost}").json()
    assert queues["profiles.dlq"]["type"] == "quorum"
    assert queues["saga"]["type"] == "quorum"
    assert "profiles.retry.1s" in queues
    assert {p["name"] for p in policies} == {
        "ams-profiles", "ams-ocr", "ams-documents", "ams-saga", "ams-dead-letters"
    }
    dlq: dict[str, object] = {}
    for _ in range(40):  # the management API shows a queue's policy with its next stats
        with ManagementClient(settings.broker.management_url) as mgmt:
            dlq = mgmt.queue(vhost_of(settings.broker.url), "profiles.dlq")
        if dlq.get("policy"):
            break
        await asyncio.sleep(0.5)
    assert dlq["policy"] == "ams-dead-letters"
    assert dlq["effective_policy_definition"] == {"overflow": "reject-publish"}


async def test_apply_moves_classic_dead_letter_queues_to_quorum_without_a_loss(
    topo_settings: Settings,
) -> None:
    """A single-node deployment's classic DLQs: every dead letter survives the migration,
    in order, with its headers; a holding queue a crash left behind is emptied too."""
    settings = topo_settings
    connection = await aio_pika.connect(settings.broker.url)
    channel = await connection.channel()
    for name in ("profiles.dlq", "saga.dlq"):
        await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "classic"})
    for i in range(40):
        await channel.default_exchange.publish(
            aio_pika.Message(f"{i}".encode(), message_id=f"m{i}", type="user.registered",
                             headers={"x-ams-error": f"boom {i}", "x-ams-attempts": 5},
                             delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key="profiles.dlq",
        )
    # An earlier apply crashed after moving two saga dead letters to the holding queue.
    await channel.declare_queue("saga.dlq.migrating", durable=True,
                                arguments={"x-queue-type": "quorum"})
    for i in range(2):
        await channel.default_exchange.publish(
            aio_pika.Message(b"s", message_id=f"s{i}"), routing_key="saga.dlq.migrating"
        )
    await connection.close()

    summary = await apply_topology(settings)
    assert "profiles.dlq (40 message(s))" in summary
    assert "saga.dlq (2 message(s))" in summary

    with ManagementClient(settings.broker.management_url) as mgmt:
        queues = {q["name"]: q for q in mgmt.queues(vhost_of(settings.broker.url))}
    assert queues["profiles.dlq"]["type"] == queues["saga.dlq"]["type"] == "quorum"
    assert not any(name.endswith(".migrating") for name in queues)
    connection = await aio_pika.connect(settings.broker.url)
    try:
        channel = await connection.channel()
        seen = []
        for name, expected in (("profiles.dlq", 40), ("saga.dlq", 2)):
            queue = await channel.get_queue(name)
            for _ in range(expected):
                message = await queue.get(timeout=5)
                seen.append((name, message.message_id, (message.headers or {}).get("x-ams-error")))
                await message.ack()
            assert await queue.get(fail=False, timeout=5) is None
        assert seen[:40] == [("profiles.dlq", f"m{i}", f"boom {i}") for i in range(40)]
        assert [s[1] for s in seen[40:]] == ["s0", "s1"]
    finally:
        await connection.close()
    assert "moved to quorum" not in await apply_topology(settings)  # nothing left to move


async def test_apply_partitioned_routes_an_aggregate_to_one_partition(
    topo_settings: Settings,
) -> None:
    settings = topo_settings.replace(worker_partitions=3)
    summary = await apply_topology(settings)
    # 3 partitioned consumers x 3 partitions x (work + 4 retry) + ocr (1 + 4) + 4 DLQs;
    # events, replay + 2 per partitioned consumer (partitions, unslotted)
    assert "54 queue(s)" in summary and "8 exchange(s)" in summary
    with ManagementClient(settings.broker.management_url) as mgmt:
        vhost = vhost_of(settings.broker.url)
        queues = {q["name"]: q for q in mgmt.queues(vhost)}
        exchanges = {e["name"]: e for e in mgmt._request("GET", f"/exchanges/{vhost}").json()}
    assert queues["profiles.p2"]["arguments"]["x-single-active-consumer"] is True
    assert "profiles" not in queues and "ocr" in queues
    assert exchanges["profiles.partitions"]["type"] == "headers"
    for _ in range(100):  # the management API reports the applied policy with its stats
        if queues["profiles.p0"].get("policy"):
            break
        await asyncio.sleep(0.1)
        with ManagementClient(settings.broker.management_url) as mgmt:
            queues = {q["name"]: q for q in mgmt.queues(vhost)}
    assert queues["profiles.p0"].get("policy") == "ams-profiles"  # the pattern covers partitions

    connection = await aio_pika.connect(settings.broker.url)
    try:
        channel = await connection.channel()
        events = await channel.get_exchange("events")
        async def depths() -> list[int]:
            out = []
            for p in range(3):
                queue = await channel.declare_queue(f"profiles.p{p}", passive=True)
                out.append(queue.declaration_result.message_count or 0)
                await queue.purge()
            return out

        slot = aggregate_slot("user-42")  # "51": partition 51 mod 3 = 0
        for i in range(30):  # one aggregate, many events: all in its partition
            await events.publish(
                aio_pika.Message(b"{}", headers={H_AGGREGATE_SLOT: slot}, message_id=str(i)),
                routing_key="user.registered",
            )
        assert await depths() == [30, 0, 0]
        for i in range(10):  # slot 31 -> partition 1
            await events.publish(
                aio_pika.Message(b"{}", headers={H_AGGREGATE_SLOT: "31"}, message_id=str(i)),
                routing_key="user.registered",
            )
        # A publisher that forgot the header: not lost, partition 0.
        await events.publish(aio_pika.Message(b"{}"), routing_key="user.registered")
        assert await depths() == [1, 10, 0]
    finally:
        await connection.close()


async def test_apply_retires_the_other_partition_layout(topo_settings: Settings) -> None:
    """compose imports the one-partition layout at boot; with WORKER_PARTITIONS=2 apply must
    stop routing copies to the unread `NAME` queues, delete them when empty, keep and name
    one that still holds messages, and undo it all when going back to one partition."""
    one = topo_settings
    two = one.replace(worker_partitions=2)
    await apply_topology(one)
    connection = await aio_pika.connect(one.broker.url)
    channel = await connection.channel()
    await channel.default_exchange.publish(aio_pika.Message(b"old"), routing_key="saga")
    await connection.close()

    summary = await apply_topology(two)
    assert "still hold messages: saga (1 message(s))" in summary
    vhost = vhost_of(one.broker.url)
    with ManagementClient(one.broker.management_url) as mgmt:
        queues = {q["name"] for q in mgmt.queues(vhost)}
        bindings = mgmt._request("GET", f"/exchanges/{vhost}/events/bindings/source").json()
        replay = mgmt._request("GET", f"/exchanges/{vhost}/replay/bindings/source").json()
    # The kept queue can no longer be replayed into either: only the layout's work queues.
    assert {b["destination"] for b in replay} == {
        "profiles.p0", "profiles.p1", "documents.p0", "documents.p1", "saga.p0", "saga.p1", "ocr"
    }
    assert "profiles" not in queues and "profiles.retry.1s" not in queues
    assert {"profiles.p0", "profiles.p1", "saga", "ocr"} <= queues  # ocr is never partitioned
    destinations = {b["destination"] for b in bindings}
    assert "saga" not in destinations and "profiles" not in destinations
    assert {"saga.partitions", "profiles.partitions", "ocr"} <= destinations

    connection = await aio_pika.connect(one.broker.url)
    channel = await connection.channel()
    await (await channel.get_queue("saga")).purge()
    await connection.close()
    await apply_topology(one)
    with ManagementClient(one.broker.management_url) as mgmt:
        queues = {q["name"] for q in mgmt.queues(vhost)}
        exchanges = {e["name"] for e in mgmt.exchanges(vhost)}
    assert not any(".p0" in q or ".p1" in q for q in queues)
    assert "profiles.partitions" not in exchanges
    assert {"profiles", "saga"} <= queues
