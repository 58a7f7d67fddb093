"""``amsctl status`` on real services: what it reports is what is there."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import aio_pika

from apps.auth.models import SagaStatus
from shared.rabbitmq_admin import ManagementClient
from shared.topology_apply import apply_topology, vhost_of
from tests.support import env_for, isolated_settings

ROOT = Path(__file__).resolve().parents[2]


async def _dead_letter(url: str, queue: str) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.default_exchange.publish(aio_pika.Message(b"{}", message_id="m1"), queue)


def test_status_reports_outboxes_queues_dead_letters_and_sagas() -> None:
    with isolated_settings("status") as settings:
        asyncio.run(apply_topology(settings))
        asyncio.run(_dead_letter(settings.broker.url, "profiles.dlq"))
        # The management API's counts are sampled (every 5 s by default): wait for this one.
        vhost = vhost_of(settings.broker.url)
        with ManagementClient(settings.broker.management_url) as mgmt:
            deadline = time.monotonic() + 30
            while mgmt.queue(vhost, "profiles.dlq").get("messages") != 1:
                assert time.monotonic() < deadline, "the management API never counted it"
                time.sleep(0.5)
        done = subprocess.run(
            [sys.executable, "-m", "amsctl", "status", "--json",
             "--probe", "relay=http://127.0.0.1:9/metrics"],
            cwd=ROOT, env=env_for(settings), capture_output=True, text=True, timeout=60,
            check=False,
        )
        text = subprocess.run(
            [sys.executable, "-m", "amsctl", "status", "--probe", "relay=http://127.0.0.1:9/"],
            cwd=ROOT, env={**env_for(settings), "COLUMNS": "120"}, capture_output=True,
            text=True, timeout=60, check=False,
        )
    assert done.returncode == 1, done.stderr  # everything answered; one process is down
    report = json.loads(done.stdout)
    assert [p["up"] for p in report["processes"]] == [False]
    assert {o["database"]: (o["backlog"], o["parked"]) for o in report["outbox"]} == {
        "authdb": (0, 0), "apidb": (0, 0), "admindb": (0, 0)}
    queues = {q["name"]: q for q in report["queues"]["queues"]}
    assert {"profiles", "ocr", "documents", "saga"} <= set(queues)
    assert not any(".retry." in name for name in queues)  # empty retry queues are not shown
    assert queues["profiles"]["consumers"] == 0
    dead = {d["queue"]: d["messages"] for d in report["dead_letters"]["queues"]}
    assert dead["profiles.dlq"] == 1 and dead["saga.dlq"] == 0
    assert report["sagas"]["counts"] == {str(s): 0 for s in SagaStatus}
    assert text.returncode == 1
    for heading in ("Processes", "Outbox", "Queues", "Dead letters: ", "profiles.dlq 1", "Sagas:"):
        assert heading in text.stdout, text.stdout
