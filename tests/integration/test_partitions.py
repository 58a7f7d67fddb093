"""Partitioned consumers (``WORKER_PARTITIONS``) against real RabbitMQ and PostgreSQL.

Every aggregate lives in exactly one partition queue, its events keep their order, a
retry comes back to the partition it failed in, and ``python -m workers NAME``
supervises one process per partition: a partition killed with SIGKILL is restarted, and
nothing is lost or applied twice.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aio_pika
import asyncpg
import pytest

from shared.config import Settings
from shared.db import asyncpg_dsn
from shared.messaging import EVENTS_EXCHANGE
from shared.rabbitmq_admin import ManagementClient
from shared.topology_apply import vhost_of
from tests.runtime_consumer import EFFECTS_DDL, build_consumer, user_message
from tests.support import env_for, free_port, isolated_settings, ready_count, wait_for

ROOT = Path(__file__).resolve().parents[2]
AGGREGATES = 24
PER_AGGREGATE = 15


@pytest.fixture(scope="module")
def part_settings() -> Iterator[Settings]:
    with isolated_settings(
        "part", worker_partitions=2, worker_retry_delays="300ms", worker_max_attempts=3,
        worker_metrics_port=0, worker_prefetch=16,
    ) as settings:
        yield settings


@pytest.fixture(scope="module")
async def db(part_settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(
        asyncpg_dsn(part_settings.database.users_url), min_size=1, max_size=2
    )
    await pool.execute(EFFECTS_DDL)
    yield pool
    await pool.close()


@pytest.fixture
async def channel(part_settings: Settings) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    connection = await aio_pika.connect(part_settings.broker.url)
    yield await connection.channel()
    await connection.close()


async def test_aggregates_stay_in_one_partition_in_order_and_retries_come_back(
    part_settings: Settings, db: asyncpg.Pool, channel: aio_pika.abc.AbstractChannel
) -> None:
    name = f"pt_{uuid.uuid4().hex[:8]}"
    consumer = build_consumer(name)  # partitions from WORKER_PARTITIONS
    # Declares the topology of both partitions, consumes nothing yet.
    await (await consumer.start(part_settings, 0)).stop(grace_s=5)
    users = [uuid.uuid4() for _ in range(AGGREGATES)]
    exchange = await channel.get_exchange(EVENTS_EXCHANGE)
    published: list[tuple[uuid.UUID, str]] = []
    for seq in range(PER_AGGREGATE):  # interleaved: every aggregate's events in order
        for user in users:
            message = user_message(f"ok{seq}@example.com", user_id=user)
            await exchange.publish(message, routing_key="user.registered")
            published.append((user, message.message_id or ""))
    total = AGGREGATES * PER_AGGREGATE
    p0, p1 = await ready_count(channel, f"{name}.p0"), await ready_count(channel, f"{name}.p1")
    assert p0 + p1 == total and p0 > 0 and p1 > 0, (p0, p1)

    async def effects() -> list[asyncpg.Record]:
        return list(await db.fetch(
            "SELECT message_id, user_id, email, attempts FROM rt_effects"
            " WHERE consumer = $1 ORDER BY id", name,
        ))

    async def handled(n: int) -> bool:
        return len(await effects()) >= n

    # Partition 0 alone first: what it applies is exactly the aggregates hashed to it.
    first = await consumer.start(part_settings, 0)
    await wait_for(lambda: handled(p0), 30, "partition 0")
    await asyncio.sleep(0.5)
    in_p0 = {row["user_id"] for row in await effects()}
    assert len(await effects()) == p0
    second = await consumer.start(part_settings, 1)
    try:
        await wait_for(lambda: handled(total), 30, "partition 1")
        await asyncio.sleep(0.5)
        rows = await effects()
        assert len(rows) == total
        assert sorted(r["message_id"] for r in rows) == sorted(mid for _, mid in published)
        in_p1 = {row["user_id"] for row in rows[p0:]}
        assert not in_p0 & in_p1  # no aggregate in both partitions
        assert in_p0 | in_p1 == set(users)
        for user in users:  # order per aggregate: ok0, ok1, ... as published
            emails = [r["email"] for r in rows if r["user_id"] == user]
            assert emails == [f"ok{seq}@example.com" for seq in range(PER_AGGREGATE)]

        # A retry goes back to the partition it failed in: with partition 1 stopped, an
        # event of a partition-0 aggregate that fails once is still applied (by p0).
        await second.stop(grace_s=5)
        user = next(iter(in_p0))
        await exchange.publish(
            user_message("transient-once@example.com", user_id=user), routing_key="user.registered"
        )
        await wait_for(lambda: handled(total + 1), 30, "the retried message")
        last = (await effects())[-1]
        assert (last["email"], last["attempts"]) == ("transient-once@example.com", 1)
        assert await ready_count(channel, f"{name}.p1") == 0
    finally:
        await first.stop(grace_s=5)
        await second.stop(grace_s=5)


async def test_a_second_copy_of_a_partition_waits_as_a_standby(
    part_settings: Settings, db: asyncpg.Pool, channel: aio_pika.abc.AbstractChannel
) -> None:
    name = f"pt_{uuid.uuid4().hex[:8]}"
    consumer = build_consumer(name)
    active = [await consumer.start(part_settings, p) for p in (0, 1)]
    # A second copy of each partition: single active consumer, so it waits.
    standby = [await consumer.start(part_settings, p) for p in (0, 1)]
    exchange = await channel.get_exchange(EVENTS_EXCHANGE)
    try:
        user = uuid.uuid4()
        for seq in range(40):
            await exchange.publish(
                user_message(f"ok{seq}@example.com", user_id=user), routing_key="user.registered"
            )

        async def emails() -> list[str]:
            return [r["email"] for r in await db.fetch(
                "SELECT email FROM rt_effects WHERE consumer = $1 ORDER BY id", name
            )]

        async def count(n: int) -> bool:
            return len(await emails()) >= n

        await wait_for(lambda: count(40), 30, "the active copy")
        assert all(s.received == 0 for s in standby)
        for copy in active:
            await copy.stop(grace_s=5)  # the standby copies take over, in order
        for seq in range(40, 60):
            await exchange.publish(
                user_message(f"ok{seq}@example.com", user_id=user), routing_key="user.registered"
            )
        await wait_for(lambda: count(60), 30, "the standby")
        await asyncio.sleep(0.3)
        assert await emails() == [f"ok{seq}@example.com" for seq in range(60)]
        assert sum(s.received for s in standby) == 20
    finally:
        for copy in active + standby:
            await copy.stop(grace_s=5)


def children(pid: int) -> set[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(p) for p in path.read_text().split()} if path.exists() else set()


def metric_sum(port: int, metric: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
        if line.startswith(metric + "{")
    )


async def test_supervisor_restarts_a_killed_partition_and_nothing_is_lost_or_doubled(
    part_settings: Settings, channel: aio_pika.abc.AbstractChannel
) -> None:
    n = 4000
    await channel.declare_exchange(EVENTS_EXCHANGE, "topic", durable=True)
    port = free_port()
    env = env_for(part_settings, WORKER_METRICS_PORT=str(port), LOG_LEVEL="WARNING")
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers", "profiles"], cwd=ROOT, env=env,
        stdin=subprocess.DEVNULL,
    )
    db = await asyncpg.connect(asyncpg_dsn(part_settings.database.users_url))
    try:
        def consuming() -> set[str]:
            with ManagementClient(part_settings.broker.management_url) as mgmt:
                queues = mgmt.queues(vhost_of(part_settings.broker.url))
            return {q["name"] for q in queues if q.get("consumers")}

        async def consumers_up() -> bool:
            try:
                metric_sum(port, "ams_worker_messages_handled_total")
            except OSError:
                return False
            return len(children(proc.pid)) == 2 and {"profiles.p0", "profiles.p1"} <= consuming()

        await wait_for(consumers_up, 60, "two partition processes consuming")
        exchange = await channel.get_exchange(EVENTS_EXCHANGE)
        for i in range(n):
            await exchange.publish(
                user_message(f"u{i}@example.com"), routing_key="user.registered"
            )

        async def profiles(at_least: int) -> bool:
            return int(await db.fetchval("SELECT count(*) FROM profiles")) >= at_least

        await wait_for(lambda: profiles(300), 60, "the first profiles")
        victim = min(children(proc.pid))
        os.kill(victim, signal.SIGKILL)  # mid-stream, with messages in flight
        async def restarted() -> bool:
            return len(children(proc.pid) - {victim}) == 2

        await wait_for(restarted, 30, "the restarted partition")
        await wait_for(lambda: profiles(n), 120, "every profile")
        await asyncio.sleep(1)
        assert int(await db.fetchval("SELECT count(*) FROM profiles")) == n
        assert int(await db.fetchval(
            "SELECT count(*) FROM outbox WHERE event_type = 'profile.created'"
        )) == n  # one follow-up event per profile: no effect applied twice
        assert int(await db.fetchval(
            "SELECT count(DISTINCT message_id) FROM inbox WHERE consumer = 'profiles'"
        )) == n
        # Both partitions' counters are served on the one metrics port.
        assert metric_sum(port, "ams_worker_messages_handled_total") >= n
        partitions = children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        assert not [pid for pid in partitions if Path(f"/proc/{pid}").exists()]  # stopped too
    finally:
        if proc.poll() is None:
            for child in children(proc.pid):
                os.kill(child, signal.SIGKILL)
            proc.kill()
            proc.wait()
        await db.close()

