"""1,000 concurrent registrations while the relay and the profiles worker are kill -9-ed and
restarted at random and RabbitMQ goes away once.

"RabbitMQ restarted" is simulated: every process of the stack reaches RabbitMQ through a
:class:`tests.faults.TcpProxy`; cutting it for 5 s drops every AMQP connection and refuses
new ones, which is a broker outage as every client sees it, without restarting the shared
broker other engineers use. Password hashing is made cheap (argon2 1 MiB, 1 pass) so the
run measures messaging, not argon2 on 2 cores.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import asyncpg
import httpx
import pytest

from shared.db import asyncpg_dsn
from shared.messaging import H_ERROR_TYPE
from shared.rabbitmq_admin import ManagementClient
from tests.e2e.stack import Stack, running_stack, wait_until
from tests.support import isolated_settings

USERS = 1000
CONCURRENCY = 50


@pytest.fixture
def chaos_stack(tmp_path: Path) -> Iterator[Stack]:
    with (
        isolated_settings(
            "chaos", redis_key_prefix=f"c{uuid.uuid4().hex[:8]}:", worker_retry_delays="200ms,1s",
            relay_poll_max_s=0.5, relay_backoff_max_s=2.0,
            argon2_memory_kib=1024, argon2_time_cost=1, argon2_allow_weak=True,
            # One client signs USERS people up, CONCURRENCY at a time: the sign-up limits
            # (tested in tests/e2e/test_auth_limits.py) would refuse most of them.
            register_max_per_client=USERS, argon2_max_pending_hashes=CONCURRENCY,
        ) as settings,
        running_stack(settings, proxied=True, log_dir=tmp_path, log_level="INFO") as stack,
    ):
        yield stack


async def _register_all(stack: Stack) -> list[str]:
    limit = asyncio.Semaphore(CONCURRENCY)
    async with httpx.AsyncClient(base_url=stack.auth_url, timeout=30) as client:

        async def one(i: int) -> str:
            async with limit:
                r = await client.post(
                    "/auth/register",
                    json={"email": f"chaos{i}-{uuid.uuid4().hex[:6]}@example.com",
                          "password": "correct horse battery staple"},
                )
            assert r.status_code == 201, r.text
            return str(r.json()["user_id"])

        return await asyncio.gather(*(one(i) for i in range(USERS)))


def _monkey(stack: Stack, stop: threading.Event, events: list[str]) -> None:
    """Kill -9 and restart the relay or the worker every 0.5-1.5 s; cut RabbitMQ once, for
    5 s from 0.5 s on, while the registrations (which need no broker: the outbox) go on."""
    rng = random.Random(8)
    started = time.monotonic()
    broker_cut = False
    while not stop.is_set():
        if not broker_cut and time.monotonic() - started > 0.5:
            broker_cut = True
            stack.proxies["rabbitmq"].cut()
            events.append(f"rabbitmq cut at {time.monotonic():.3f}")
            stop.wait(5)
            stack.proxies["rabbitmq"].restore()
            events.append("rabbitmq restored")
        name = rng.choice(["relay", "profiles"])
        stack.kill9(name)
        stop.wait(rng.uniform(0.1, 0.5))
        stack.start(name)
        events.append(f"kill -9 {name}")
        stop.wait(rng.uniform(0.5, 1.5))


async def _profiles(stack: Stack) -> dict[str, int]:
    conn = await asyncpg.connect(asyncpg_dsn(stack.direct.database.users_url))
    try:
        rows = await conn.fetch("SELECT user_id::text AS u, count(*) AS n FROM profiles GROUP BY 1")
    finally:
        await conn.close()
    return {r["u"]: r["n"] for r in rows}


async def _outbox_unsent(stack: Stack) -> list[asyncpg.Record]:
    """Rows still in an outbox that are not parked with a reason."""
    rows = []
    for url in (stack.direct.database.auth_url, stack.direct.database.users_url):
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            rows += await conn.fetch(
                "SELECT event_type, attempts, last_error FROM outbox"
                " WHERE parked_at IS NULL OR last_error IS NULL"
            )
        finally:
            await conn.close()
    return rows


async def _dead_letters(
    stack: Stack, queue: str, count: int
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    connection = await aio_pika.connect(stack.direct.broker.url)
    async with connection:
        channel = await connection.channel()
        q = await channel.get_queue(queue)
        messages = []
        for _ in range(count):
            message = await q.get(fail=False)
            if message is None:
                break
            messages.append(message)
        await channel.close()  # unacked: back into the queue for the operator
    return messages


def test_registrations_survive_kill9_and_broker_outage(chaos_stack: Stack) -> None:
    stack = chaos_stack
    stop, events = threading.Event(), list[str]()
    monkey = threading.Thread(target=_monkey, args=(stack, stop, events))
    chaos_started = time.monotonic()
    monkey.start()
    try:
        user_ids = asyncio.run(_register_all(stack))
        registered_at = time.monotonic()
        # the chaos goes on while the backlog drains: 15 s of chaos at least
        time.sleep(max(2.0, chaos_started + 15 - time.monotonic()))
    finally:
        stop.set()
        monkey.join(30)
    cut_at = float(next(e for e in events if e.startswith("rabbitmq cut")).rsplit(" ", 1)[1])
    assert cut_at < registered_at, "the broker outage came after the registrations"
    assert "rabbitmq restored" in events and sum("kill -9" in e for e in events) >= 5, events
    for name, proc in stack.processes.items():
        assert proc.poll() is None, f"{name} died"

    # Every registered user ends up with exactly one profile.
    wait_until(lambda: len(asyncio.run(_profiles(stack))) >= USERS, 120, "1,000 profiles")
    profiles = asyncio.run(_profiles(stack))
    assert set(profiles) == set(user_ids)
    assert all(n == 1 for n in profiles.values())

    # Nothing stuck: outboxes empty (or parked with a reason), work and retry queues empty.
    wait_until(lambda: not asyncio.run(_outbox_unsent(stack)), 30, "empty outboxes")
    vhost = stack.direct.broker.url.rsplit("/", 1)[1]

    def queues_drained() -> bool:
        with ManagementClient(stack.direct.broker.management_url) as mgmt:
            queues = mgmt.queues(vhost)
        return all(
            q.get("messages", 0) == 0 for q in queues
            if q["name"].startswith("profiles") and not q["name"].endswith(".dlq")
        )

    wait_until(queues_drained, 30, "empty profiles work and retry queues", interval_s=1)
    with ManagementClient(stack.direct.broker.management_url) as mgmt:
        dlq_depth = int(mgmt.queue(vhost, "profiles.dlq").get("messages", 0))
    # Every dead letter (if any) says why it is there.
    for message in asyncio.run(_dead_letters(stack, "profiles.dlq", dlq_depth)):
        assert message.headers.get(H_ERROR_TYPE), message.headers
