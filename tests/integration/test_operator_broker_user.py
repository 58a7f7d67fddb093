"""The operator's broker user on a real RabbitMQ, in a vhost of its own: ``amsctl topology
apply`` gives it exactly the least privilege it needs, the broker refuses every publish but
to the ``replay`` exchange, and ``amsctl dlq replay`` with its credentials replays into a
queue of the topology end to end while a forged target is refused and audited.

Before, the operator user could write to ``amq.default`` and so publish to any queue by
name, and a replay's target (a message header) was checked only by its name.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import aio_pika
import aiormq.exceptions
import pytest
from typer.testing import CliRunner

from amsctl.main import app
from shared import messaging as m
from shared import topology
from shared.config import Settings
from shared.rabbitmq_admin import ManagementClient
from shared.topology_apply import apply_topology, vhost_of
from tests.integration.test_dlq_cli import dead_letter
from tests.integration.test_operator_audit import entries
from tests.support import isolated_settings

runner = CliRunner()


def _with_user(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{parts.hostname}:{parts.port}"
    return parts._replace(netloc=netloc).geturl()


@pytest.fixture(scope="module")
def world() -> Iterator[tuple[Settings, Settings]]:
    """(guest's settings, the operator's settings), the topology applied by guest."""
    user, password = f"ams_op_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    with isolated_settings("opuser", rabbitmq_operator_user=user,
                           rabbitmq_operator_password=password) as admin:
        try:
            summary = asyncio.run(apply_topology(admin))
            assert f"operator user {user!r}" in summary
            operator = admin.replace(
                rabbitmq_url=_with_user(admin.broker.url, user, password),
                rabbitmq_management_url=_with_user(admin.broker.management_url, user, password),
            )
            yield admin, operator
        finally:
            with ManagementClient(admin.broker.management_url) as mgmt:
                mgmt.delete_user(user)


def test_apply_writes_the_least_privilege_permissions_idempotently(world: Any) -> None:
    admin, _ = world
    summary = asyncio.run(apply_topology(admin))  # the second time: the same outcome
    perms = topology.OPERATOR_PERMISSIONS
    assert f"write {perms.write}" in summary
    with ManagementClient(admin.broker.management_url) as mgmt:
        written = mgmt.permissions(vhost_of(admin.broker.url), admin.broker.operator_user)
    assert (written["configure"], written["write"], written["read"]) == (
        "^$", "^replay$", r"^.*\.dlq$"
    )


async def _refused(url: str, act: Any) -> str:
    """What the broker says to ``act(channel)`` done with these credentials."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused) as refused:
            await act(channel)
        return str(refused.value)


def _message() -> aio_pika.Message:
    return aio_pika.Message(b"{}", message_id=uuid.uuid4().hex, type="user.registered")


def test_the_broker_refuses_the_operator_every_publish_but_to_the_replay_exchange(
    world: Any,
) -> None:
    admin, operator = world

    async def to_default(channel: aio_pika.abc.AbstractChannel) -> None:
        await channel.default_exchange.publish(_message(), routing_key="profiles", timeout=10)

    async def to_events(channel: aio_pika.abc.AbstractChannel) -> None:
        events = await channel.get_exchange(m.EVENTS_EXCHANGE)
        await events.publish(_message(), routing_key="user.registered", timeout=10)

    async def declare(channel: aio_pika.abc.AbstractChannel) -> None:
        await channel.declare_queue("operator-made", durable=True)

    async def read_work(channel: aio_pika.abc.AbstractChannel) -> None:
        queue = await channel.get_queue("profiles")
        await queue.get(fail=False, timeout=10)

    for act, word in ((to_default, "amq.default"), (to_events, "'events'"),
                      (declare, "operator-made"), (read_work, "'profiles'")):
        assert word in asyncio.run(_refused(operator.broker.url, act))

    async def through_replay() -> list[str]:
        """Through the replay exchange a work queue is reached; a retry queue is not."""
        connection = await aio_pika.connect(operator.broker.url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            exchange = await channel.get_exchange(m.REPLAY_EXCHANGE)
            with pytest.raises(aio_pika.exceptions.DeliveryError):
                await exchange.publish(_message(), routing_key="profiles.retry.1s",
                                       mandatory=True, timeout=10)
            sent = _message()
            await exchange.publish(sent, routing_key="profiles", mandatory=True, timeout=10)
        return [str(sent.message_id)]

    sent = asyncio.run(through_replay())
    assert _take(admin, "profiles") == sent
    assert _take(admin, "profiles.retry.1s") == []


def _take(settings: Settings, queue: str) -> list[str]:
    async def run() -> list[str]:
        connection = await aio_pika.connect(settings.broker.url)
        async with connection:
            channel = await connection.channel()
            q = await channel.get_queue(queue)
            taken = []
            while (message := await q.get(no_ack=True, fail=False, timeout=5)) is not None:
                taken.append(str(message.message_id))
            return taken

    return asyncio.run(run())


def test_a_replay_with_the_operator_credentials_works_and_a_forged_target_is_refused(
    world: Any, tmp_path: Path,
) -> None:
    admin, operator = world

    async def put() -> None:
        connection = await aio_pika.connect(admin.broker.url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            for letter in (dead_letter("own", "profiles"),
                           # A partition that is not deployed (one partition): no such queue
                           # in the topology, whatever its name promises.
                           dead_letter("forged", "profiles.p7")):
                await channel.default_exchange.publish(letter, routing_key="profiles.dlq")

    asyncio.run(put())
    env = {"AUTH_DATABASE_URL": admin.database.auth_url, "RABBITMQ_URL": operator.broker.url,
           "RABBITMQ_MANAGEMENT_URL": operator.broker.management_url,
           "AMSCTL_AUDIT_LOG": str(tmp_path / "audit.jsonl")}
    result = runner.invoke(app, ["dlq", "replay", "--queue", "profiles.dlq", "--all", "--yes",
                                 "--json", "--reason", "operator user test"], env=env)
    assert result.exit_code == 1, result.output  # one of two refused
    outcome = {o["message_id"]: o for o in json.loads(result.stdout)["messages"]}
    assert outcome["own"]["outcome"] == "ok"
    assert outcome["forged"]["outcome"] == "failed"
    assert "not a work queue of the topology" in outcome["forged"]["error"]
    assert _take(admin, "profiles") == ["own"]
    async def left() -> int:
        connection = await aio_pika.connect(admin.broker.url)
        async with connection:
            channel = await connection.channel()
            dlq = await channel.declare_queue("profiles.dlq", passive=True)
            return int(dlq.declaration_result.message_count or 0)

    assert asyncio.run(left()) == 1  # the forged letter stays for the operator
    [row] = [r for r in entries(admin, action="dlq.replay")
             if r.details.get("reason") == "operator user test"]
    assert row.outcome == "partial"
    assert (row.details["message_ids"], row.details["failed_ids"]) == (["own"], ["forged"])
