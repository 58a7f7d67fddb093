"""``amsctl topology apply`` on a live broker: idempotent, tolerant of existing queues."""

from __future__ import annotations

from collections.abc import Iterator

import aio_pika
import pytest

from shared.config import Settings
from shared.rabbitmq_admin import ManagementClient
from shared.topology_apply import apply_topology, vhost_of
from tests.support import isolated_settings


@pytest.fixture
def topo_settings() -> Iterator[Settings]:
    with isolated_settings("topo", migrate=False) as settings:
        yield settings


async def test_apply_twice_and_over_a_queue_with_other_arguments(topo_settings: Settings) -> None:
    settings = topo_settings
    connection = await aio_pika.connect(settings.rabbitmq_url)
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
    with ManagementClient(settings.rabbitmq_management_url) as mgmt:
        vhost = vhost_of(settings.rabbitmq_url)
        queues = {q["name"]: q for q in mgmt.queues(vhost)}
        policies = mgmt._request("GET", f"/policies/{vhost}").json()
    assert queues["profiles.dlq"]["type"] == "classic"
    assert queues["saga"]["type"] == "quorum"
    assert "profiles.retry.1s" in queues
    assert {p["name"] for p in policies} == {
        "ams-profiles", "ams-ocr", "ams-documents", "ams-saga"
    }
