"""``amsctl dlq`` against a real RabbitMQ, in a fresh vhost per test.

Dead letters are put in place the way the consumer runtime does it: a message with the
original properties and the ``x-ams-*`` failure headers published to ``<consumer>.dlq``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from amsctl import common
from amsctl.common import EXIT_NOT_FOUND, EXIT_UNAVAILABLE, EXIT_USAGE
from amsctl.dlq.model import replay_target_allowed
from amsctl.main import app
from apps.auth import audit
from apps.auth.audit import AuditFilter
from shared import messaging as m
from shared.broker import declare_topology
from shared.config import Settings
from shared.db import create_engine, session_factory
from shared.errors import DomainError
from shared.events import UserRegistered, encode
from shared.topology import ConsumerSpec, consumer_spec, parse_retry_delays, topology_of
from tests.support import isolated_settings
from workers.runtime.consumer import Consumer

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables as an operator's terminal shows them (CliRunner is not a terminal)."""
    monkeypatch.setattr(common.console, "width", 200)


@pytest.fixture(scope="module")
def authdb() -> Iterator[str]:
    """One migrated authdb for the module: replays and purges are recorded in its audit table."""
    with isolated_settings("dlqaudit") as s:
        yield s.database.auth_url


@pytest.fixture
def env(tmp_path: Path, authdb: str) -> Iterator[tuple[Settings, dict[str, str]]]:
    with isolated_settings("dlq", migrate=False) as s:
        yield s, {
            "AUTH_DATABASE_URL": authdb,
            "RABBITMQ_URL": s.broker.url,
            "RABBITMQ_MANAGEMENT_URL": s.broker.management_url,
            "AMSCTL_AUDIT_LOG": str(tmp_path / "audit.jsonl"),
            "DLQ_REPLAY_WINDOW": "50",
        }


# --- broker helpers -------------------------------------------------------------------


async def _declare(s: Settings, *consumers: str) -> None:
    """The topology of these consumers, as a worker declares it (the replay exchange too)."""
    specs = tuple(consumer_spec(name) for name in consumers)
    conn = await aio_pika.connect(s.broker.url)
    async with conn:
        await declare_topology(await conn.channel(), topology_of(specs, parse_retry_delays("1s")))


def dead_letter(message_id: str, consumer: str, **kw: Any) -> aio_pika.Message:
    now = datetime.now(UTC)
    age: timedelta = kw.get("age", timedelta(minutes=1))
    headers: dict[str, Any] = {
        m.H_CORRELATION_ID: f"corr-{message_id}",
        m.H_FAILED_QUEUE: consumer,
        m.H_FAILED_ROUTING_KEY: kw.get("routing_key", "user.registered"),
        m.H_ERROR_TYPE: kw.get("error_type", "IntegrityError"),
        m.H_ERROR_MESSAGE: kw.get("error_message", "duplicate key value"),
        m.H_ERROR_WHERE: kw.get("where", "workers.profiles:create_profile:42"),
        m.H_TRACEBACK: 'Traceback (most recent call last):\n  File "x.py", line 1\nIntegrityError',
        m.H_ATTEMPTS: 5,
        m.H_FIRST_FAILURE_AT: (now - age - timedelta(minutes=5)).isoformat(),
        m.H_LAST_FAILURE_AT: (now - age).isoformat(),
    }
    return aio_pika.Message(
        json.dumps({"user_id": message_id, "n": kw.get("n", 0)}).encode(),
        message_id=message_id, type=kw.get("routing_key", "user.registered"),
        content_type="application/json", correlation_id=f"corr-{message_id}",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT, timestamp=now, headers=headers,
    )


async def _publish(s: Settings, queue: str, messages: list[aio_pika.Message]) -> None:
    conn = await aio_pika.connect(s.broker.url)
    async with conn:
        ch = await conn.channel(publisher_confirms=True)
        await asyncio.gather(*(ch.default_exchange.publish(msg, routing_key=queue)
                               for msg in messages))


async def _drain(s: Settings, queue: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Read a queue to the end without removing anything (held, then nacked in order)."""
    conn = await aio_pika.connect(s.broker.url)
    async with conn:
        ch = await conn.channel()
        q = await ch.get_queue(queue)
        held = []
        while (msg := await q.get(no_ack=False, fail=False, timeout=5)) is not None:
            held.append(msg)
        for msg in held:
            await msg.nack(requeue=True)
        return held


def ids(s: Settings, queue: str) -> list[str]:
    return [str(msg.message_id) for msg in asyncio.run(_drain(s, queue))]


def setup(s: Settings, consumer: str, letters: list[aio_pika.Message]) -> None:
    asyncio.run(_declare(s, consumer))
    asyncio.run(_publish(s, f"{consumer}.dlq", letters))


def cli(env: dict[str, str], *args: str) -> Any:
    return runner.invoke(app, ["dlq", *args], env=env)


def audit_rows(env: dict[str, str], action: str) -> list[audit.AuditEntry]:
    """This test's rows of the operator audit table (its audit log names its operations)."""
    log = Path(env["AMSCTL_AUDIT_LOG"])
    ops = {json.loads(line)["op_id"] for line in log.read_text().splitlines()}

    async def read() -> list[audit.AuditEntry]:
        engine = create_engine(env["AUTH_DATABASE_URL"], pool_size=1)
        try:
            rows = await audit.list_entries(session_factory(engine), AuditFilter(action=action))
        finally:
            await engine.dispose()
        return [r for r in rows if r.details.get("op_id") in ops]

    return asyncio.run(read())


# --- list / show ----------------------------------------------------------------------


def test_list_reads_every_dead_letter_without_changing_the_queue(env: Any) -> None:
    s, e = env
    letters = [dead_letter(f"p{i}", "profiles") for i in range(6)]
    setup(s, "profiles", letters)
    setup(s, "ocr", [dead_letter("o1", "ocr", routing_key="document.uploaded")])

    for _ in range(2):
        result = cli(e, "list", "--json")
        assert result.exit_code == 0, result.output
        rows = json.loads(result.stdout)
        assert [r["message_id"] for r in rows] == ["o1"] + [f"p{i}" for i in range(6)]
    assert ids(s, "profiles.dlq") == [f"p{i}" for i in range(6)]
    assert ids(s, "ocr.dlq") == ["o1"]
    table = cli(e, "list")
    assert table.exit_code == 0
    assert "p5" in table.stdout
    assert "IntegrityError" in table.stdout


def test_filters_and_grouping(env: Any) -> None:
    s, e = env
    setup(s, "profiles", [
        dead_letter("old-dup", "profiles", age=timedelta(hours=3)),
        dead_letter("new-dup", "profiles"),
        dead_letter("timeout", "profiles", error_type="TimeoutError",
                    error_message="upstream timed out", where="workers.profiles:fetch:7",
                    routing_key="profile.delete"),
    ])
    setup(s, "ocr", [dead_letter("ocr1", "ocr", error_type="TimeoutError",
                                 error_message="engine timed out", where="workers.ocr:run:9",
                                 routing_key="document.uploaded")])

    def listed(*args: str) -> list[str]:
        result = cli(e, "list", "--json", *args)
        assert result.exit_code == 0, result.output
        return sorted(r["message_id"] for r in json.loads(result.stdout))

    assert listed("--queue", "ocr.dlq") == ["ocr1"]
    assert listed("--routing-key", "user.*") == ["new-dup", "old-dup"]
    assert listed("--routing-key", "#.delete") == ["timeout"]
    assert listed("--error", "TIMED OUT") == ["ocr1", "timeout"]
    assert listed("--older-than", "1h") == ["old-dup"]
    assert listed("--newer-than", "30m", "--error", "duplicate") == ["new-dup"]

    result = cli(e, "list", "--group", "--json")
    groups = {g["fingerprint"]: g for g in json.loads(result.stdout)}
    dup = groups["IntegrityError @ workers.profiles:create_profile:42"]
    assert dup["count"] == 2
    assert sorted(dup["message_ids"]) == ["new-dup", "old-dup"]
    assert datetime.fromisoformat(dup["first_seen"]) < datetime.now(UTC) - timedelta(hours=3)
    assert datetime.fromisoformat(dup["last_seen"]) > datetime.now(UTC) - timedelta(minutes=5)
    assert groups["TimeoutError @ workers.ocr:run:9"]["count"] == 1
    assert len(groups) == 3
    assert listed("--fingerprint", dup["fingerprint_id"]) == ["new-dup", "old-dup"]
    assert cli(e, "list", "--older-than", "soon").exit_code == EXIT_USAGE


def test_show_prints_everything_an_operator_needs(env: Any) -> None:
    s, e = env
    setup(s, "profiles", [dead_letter("abc", "profiles", n=7)])
    result = cli(e, "show", "abc", "--json")
    assert result.exit_code == 0, result.output
    [letter] = json.loads(result.stdout)
    assert letter["error_type"] == "IntegrityError"
    assert letter["attempts"] == 5
    assert "Traceback" in letter["traceback"]
    assert json.loads(letter["body"]) == {"user_id": "abc", "n": 7}
    assert letter["headers"][m.H_CORRELATION_ID] == "corr-abc"
    people = cli(e, "show", "abc")
    assert people.exit_code == 0
    for bit in ("duplicate key value", "workers.profiles:create_profile:42", '"n": 7', "replay"):
        assert bit in people.stdout
    assert cli(e, "show", "nope").exit_code == EXIT_NOT_FOUND


# --- replay ---------------------------------------------------------------------------


def test_dry_run_changes_nothing(env: Any) -> None:
    s, e = env
    setup(s, "profiles", [dead_letter(f"p{i}", "profiles") for i in range(5)])
    result = cli(e, "replay", "--queue", "profiles.dlq", "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert [p["message_id"] for p in plan["messages"]] == [f"p{i}" for i in range(5)]
    assert {p["target"] for p in plan["messages"]} == {"profiles"}
    assert ids(s, "profiles.dlq") == [f"p{i}" for i in range(5)]
    assert ids(s, "profiles") == []
    assert not Path(e["AMSCTL_AUDIT_LOG"]).exists()


def test_replay_goes_to_the_failed_queue_only_and_keeps_identity(env: Any) -> None:
    s, e = env
    setup(s, "profiles", [dead_letter("a", "profiles"),
                          dead_letter("b", "profiles", error_type="TimeoutError"),
                          dead_letter("c", "profiles")])

    async def bind_a_second_subscriber() -> None:
        conn = await aio_pika.connect(s.broker.url)
        async with conn:
            ch = await conn.channel()
            ex = await ch.get_exchange(m.EVENTS_EXCHANGE)
            audit = await ch.declare_queue("audit", durable=True,
                                           arguments={"x-queue-type": "quorum"})
            await audit.bind(ex, routing_key="user.registered")  # profiles: by the topology

    asyncio.run(bind_a_second_subscriber())
    result = cli(e, "replay", "--queue", "profiles.dlq", "--error", "Integrity",
                 "--reason", "bug 12 fixed", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["ok"] == 2

    assert ids(s, "profiles.dlq") == ["b"]
    assert ids(s, "audit") == []
    replayed = asyncio.run(_drain(s, "profiles"))
    assert [r.message_id for r in replayed] == ["a", "c"]
    first = replayed[0]
    assert json.loads(first.body) == {"user_id": "a", "n": 0}
    assert first.type == "user.registered"
    assert first.correlation_id == "corr-a"
    headers = first.headers or {}
    assert headers[m.H_ATTEMPTS] == 0
    assert headers[m.H_CORRELATION_ID] == "corr-a"
    [stamp] = headers[m.H_REPLAYS]  # type: ignore[misc]
    assert stamp["from"] == "profiles.dlq"  # type: ignore[index]
    assert stamp["reason"] == "bug 12 fixed"  # type: ignore[index]

    history = cli(e, "history", "a", "--json")
    assert history.exit_code == 0
    [entry] = json.loads(history.stdout)
    assert (entry["action"], entry["target"], entry["outcome"]) == ("replay", "profiles", "ok")
    assert entry["reason"] == "bug 12 fixed"
    assert cli(e, "history", "b").exit_code == EXIT_NOT_FOUND

    [row] = audit_rows(e, "dlq.replay")
    assert (row.target, row.outcome, row.source) == ("profiles.dlq", "ok", "cli")
    assert row.details["message_ids"] == ["a", "c"] and row.details["reason"] == "bug 12 fixed"
    assert row.details["op_id"] == entry["op_id"]  # the JSON-lines log has the same operation


def test_replay_max_and_message_id(env: Any) -> None:
    s, e = env
    setup(s, "profiles", [dead_letter(f"p{i}", "profiles") for i in range(5)])
    assert cli(e, "replay", "--all", "--yes", "--max", "2").exit_code == 0
    assert ids(s, "profiles") == ["p0", "p1"]
    assert cli(e, "replay", "--message-id", "p3").exit_code == 0
    assert ids(s, "profiles") == ["p0", "p1", "p3"]
    assert ids(s, "profiles.dlq") == ["p2", "p4"]
    assert cli(e, "replay", "--message-id", "missing").exit_code == EXIT_NOT_FOUND


def test_replay_all_is_confirmed_first(env: Any) -> None:
    s, e = env
    setup(s, "profiles", [dead_letter("c0", "profiles")])
    result = cli(e, "replay", "--all")  # not a terminal, no --yes: nothing moves
    assert result.exit_code == 2 and "--yes" in result.output
    assert ids(s, "profiles") == [] and ids(s, "profiles.dlq") == ["c0"]


def test_replay_refuses_what_is_not_a_dead_letter_queue(env: Any) -> None:
    s, e = env
    setup(s, "profiles", [dead_letter("a", "profiles")])
    result = cli(e, "replay", "--queue", "profiles")
    assert result.exit_code == EXIT_USAGE
    assert "profiles.dlq" in result.output
    assert cli(e, "replay", "--queue", "ghost.dlq").exit_code == EXIT_NOT_FOUND
    assert cli(e, "replay").exit_code == EXIT_USAGE
    assert ids(s, "profiles.dlq") == ["a"]


def test_replay_into_a_missing_queue_keeps_the_dead_letter(env: Any) -> None:
    s, e = env
    asyncio.run(_declare(s, "profiles"))
    letters = [dead_letter("a", "gone"), dead_letter("b", "profiles")]
    asyncio.run(_publish(s, "profiles.dlq", letters))
    result = cli(e, "replay", "--all", "--yes", "--json")
    assert result.exit_code == 1
    outcome = {o["message_id"]: o for o in json.loads(result.stdout)["messages"]}
    assert outcome["a"]["outcome"] == "failed"
    assert outcome["b"]["outcome"] == "ok"
    assert ids(s, "profiles.dlq") == ["a"]
    [row] = audit_rows(e, "dlq.replay")
    assert row.outcome == "partial"
    assert (row.details["message_ids"], row.details["failed_ids"]) == (["b"], ["a"])


# --- purge ----------------------------------------------------------------------------


def test_purge_removes_exactly_the_selection(env: Any) -> None:
    s, e = env
    setup(s, "profiles", [dead_letter("keep-1", "profiles"),
                          dead_letter("drop-1", "profiles", error_type="TimeoutError"),
                          dead_letter("keep-2", "profiles"),
                          dead_letter("drop-2", "profiles", error_type="TimeoutError")])
    everything = ["keep-1", "drop-1", "keep-2", "drop-2"]
    refused = cli(e, "purge", "--queue", "profiles.dlq", "--error", "Timeout")
    assert refused.exit_code == EXIT_USAGE
    assert "drop-2" in refused.stdout
    assert ids(s, "profiles.dlq") == everything

    result = cli(e, "purge", "--queue", "profiles.dlq", "--error", "Timeout", "--yes")
    assert result.exit_code == 0, result.output
    assert "removed" in result.stdout
    assert "drop-1" in result.stdout
    assert "drop-2" in result.stdout
    assert "keep-1" not in result.stdout
    assert ids(s, "profiles.dlq") == ["keep-1", "keep-2"]
    assert ids(s, "profiles") == []

    records = [json.loads(line) for line in Path(e["AMSCTL_AUDIT_LOG"]).read_text().splitlines()]
    assert [r["event"] for r in records] == ["start", "messages", "end"]
    assert sorted(x["message_id"] for x in records[1]["messages"]) == ["drop-1", "drop-2"]
    assert records[0]["who"]
    [row] = audit_rows(e, "dlq.purge")
    assert row.outcome == "ok" and row.actor == records[0]["who"]
    assert sorted(row.details["message_ids"]) == ["drop-1", "drop-2"]


def test_replay_refused_when_the_audit_table_is_unreachable(env: Any) -> None:
    s, e = env
    setup(s, "profiles", [dead_letter("a", "profiles")])
    down = e | {"AUTH_DATABASE_URL": "postgresql+asyncpg://postgres@127.0.0.1:1/authdb"}
    result = cli(down, "replay", "--all", "--yes")
    assert result.exit_code == EXIT_UNAVAILABLE, result.output
    assert "nothing was changed" in result.output
    assert ids(s, "profiles.dlq") == ["a"]


def test_unreachable_broker_is_a_clear_error(env: Any) -> None:
    _, e = env
    down = e | {"RABBITMQ_URL": "amqp://guest:guest@127.0.0.1:1/"}
    result = cli(down, "list")
    assert result.exit_code == EXIT_UNAVAILABLE
    assert "unreachable" in result.output
    no_ui = e | {"RABBITMQ_MANAGEMENT_URL": "http://guest:guest@127.0.0.1:1/"}
    assert cli(no_ui, "replay", "--all", "--yes").exit_code == EXIT_UNAVAILABLE


# --- with processes -------------------------------------------------------------------


def _amsctl(e: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "amsctl", "dlq", *args], cwd=ROOT,
        env=os.environ | e | {"PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


async def test_replay_while_the_consumer_is_running(env: Any) -> None:
    s, e = env
    await _declare(s, "profiles")
    await _publish(s, "profiles.dlq", [dead_letter(f"p{i}", "profiles") for i in range(300)])
    effects: dict[str, int] = {}
    conn = await aio_pika.connect(s.broker.url)
    async with conn:
        ch = await conn.channel()
        await ch.set_qos(prefetch_count=20)
        work = await ch.get_queue("profiles")

        async def consume(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with msg.process():
                effects[str(msg.message_id)] = effects.get(str(msg.message_id), 0) + 1

        await work.consume(consume)
        proc = await asyncio.to_thread(_amsctl, e, "replay", "--queue", "profiles.dlq")
        out, err = await asyncio.to_thread(proc.communicate, timeout=60)
        assert proc.returncode == 0, err.decode()
        deadline = time.monotonic() + 20
        while len(effects) < 300 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    assert sorted(effects) == sorted(f"p{i}" for i in range(300))
    assert set(effects.values()) == {1}
    assert "replayed 300" in out.decode()
    assert await _drain(s, "profiles.dlq") == []


def test_kill_9_in_the_middle_of_a_replay_loses_nothing(env: Any) -> None:
    s, e = env
    all_ids = {str(uuid.uuid4()) for _ in range(1000)}
    setup(s, "profiles", [dead_letter(i, "profiles") for i in sorted(all_ids)])
    proc = _amsctl(e | {"DLQ_REPLAY_WINDOW": "5"}, "replay", "--queue", "profiles.dlq")
    moved = asyncio.run(_kill_when_moving(s, proc))
    assert 0 < moved < 1000, f"kill did not land mid-replay (moved={moved})"

    asyncio.run(_wait_total(s, 1000))
    left, replayed = ids(s, "profiles.dlq"), ids(s, "profiles")
    assert set(left) | set(replayed) == all_ids
    assert len(replayed) >= moved
    assert len(left) + len(replayed) - 1000 <= 5  # duplicates only from the last window


async def _kill_when_moving(s: Settings, proc: subprocess.Popen[bytes]) -> int:
    conn = await aio_pika.connect(s.broker.url)
    async with conn:
        ch = await conn.channel()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            q = await ch.declare_queue("profiles", passive=True)
            count = int(q.declaration_result.message_count or 0)
            if count >= 50:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
                return count
            await asyncio.sleep(0.005)
    proc.kill()
    return -1


async def _wait_total(s: Settings, expected: int) -> None:
    """Until the broker has requeued what the killed process held unacked."""
    conn = await aio_pika.connect(s.broker.url)
    async with conn:
        ch = await conn.channel()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            total = 0
            for name in ("profiles", "profiles.dlq"):
                q = await ch.declare_queue(name, passive=True)
                total += int(q.declaration_result.message_count or 0)
            if total >= expected:
                return
            await asyncio.sleep(0.05)


# --- with the real consumer runtime and its inbox -------------------------------------


def test_replayed_messages_are_processed_once_by_the_runtime_inbox(tmp_path: Path) -> None:
    with isolated_settings("dlqinbox", worker_metrics_port=0) as s:
        e = {"AUTH_DATABASE_URL": s.database.auth_url,
             "RABBITMQ_URL": s.broker.url, "RABBITMQ_MANAGEMENT_URL": s.broker.management_url,
             "AMSCTL_AUDIT_LOG": str(tmp_path / "audit.jsonl")}
        applied, inbox_rows = asyncio.run(_replay_through_runtime(s, e))
    assert sorted(applied) == sorted(set(applied))
    assert len(applied) == 20
    assert inbox_rows == 20


async def _replay_through_runtime(s: Settings, e: dict[str, str]) -> tuple[list[str], int]:
    applied: list[str] = []
    broken = {"on": True}

    async def handler(session: Any, message: UserRegistered, ctx: Any) -> None:
        if broken["on"]:
            raise DomainError("profile rule violated (bug, fixed later)")
        applied.append(str(message.user_id))

    spec = ConsumerSpec("profiles", "apidb", (UserRegistered.event_type,))
    consumer = Consumer(spec, {UserRegistered: handler})
    running = await consumer.start(s)
    try:
        events = [UserRegistered(user_id=uuid.uuid4(), email=f"u{i}@x.io") for i in range(20)]
        await _publish_events(s, [(str(uuid.uuid4()), ev, encode(ev)) for ev in events])
        await _wait_depth(s, "profiles.dlq", 20)
        broken["on"] = False

        proc = await asyncio.to_thread(_amsctl, e, "replay", "--queue", "profiles.dlq")
        _, err = await asyncio.to_thread(proc.communicate, timeout=60)
        assert proc.returncode == 0, err.decode()
        await _until(lambda: len(applied) >= 20)

        # A kill -9 mid-replay can leave a copy in the DLQ after its twin was processed:
        # replaying the copies must have no second effect.
        copies = [dead_letter(mid, "profiles") for mid in await _inbox_ids(s, 5)]
        for copy, ev in zip(copies, events, strict=False):
            copy.body = encode(ev)
        await _publish(s, "profiles.dlq", copies)
        proc = await asyncio.to_thread(_amsctl, e, "replay", "--all", "--yes")
        _, err = await asyncio.to_thread(proc.communicate, timeout=60)
        assert proc.returncode == 0, err.decode()
        await _wait_depth(s, "profiles", 0)
        await asyncio.sleep(0.5)
        assert await _drain(s, "profiles.dlq") == []
    finally:
        await running.stop(grace_s=5)
    engine = create_engine(s.database.url("apidb"))
    async with engine.connect() as conn:
        rows = (await conn.execute(
            text("SELECT count(*) FROM inbox WHERE consumer = 'profiles'"))).scalar_one()
    await engine.dispose()
    return applied, int(rows)


async def _publish_events(s: Settings, events: list[tuple[str, Any, bytes]]) -> None:
    conn = await aio_pika.connect(s.broker.url)
    async with conn:
        ch = await conn.channel(publisher_confirms=True)
        ex = await ch.get_exchange(m.EVENTS_EXCHANGE)
        for message_id, ev, body in events:
            await ex.publish(aio_pika.Message(
                body, message_id=message_id, type=ev.event_type,
                content_type=m.CONTENT_TYPE, delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                headers={m.H_SCHEMA_VERSION: 1, m.H_AGGREGATE_ID: ev.aggregate_id,
                         m.H_AGGREGATE_TYPE: ev.aggregate_type},
            ), routing_key=ev.event_type)


async def _inbox_ids(s: Settings, n: int) -> list[str]:
    engine = create_engine(s.database.url("apidb"))
    async with engine.connect() as conn:
        result = await conn.execute(
            text("SELECT message_id FROM inbox WHERE consumer = 'profiles' LIMIT :n"), {"n": n})
        found = [str(r[0]) for r in result]
    await engine.dispose()
    return found


async def _wait_depth(s: Settings, queue: str, depth: int) -> None:
    conn = await aio_pika.connect(s.broker.url)
    async with conn:
        ch = await conn.channel()

        async def count() -> int:
            q = await ch.declare_queue(queue, passive=True)
            return int(q.declaration_result.message_count or 0)

        deadline = time.monotonic() + 30
        while (current := await count()) != depth:
            assert time.monotonic() < deadline, f"{queue} has {current}, expected {depth}"
            await asyncio.sleep(0.05)


async def _until(check: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def test_a_forged_letter_is_listed_escaped_and_can_be_purged(env: Any) -> None:
    """Headers out of range (a failure time of 3e38 seconds killed `dlq list` with an
    OverflowError), terminal escape codes and Rich markup in what a message carries: the CLI
    shows the letter, escaped, and purges it."""
    s, e = env
    forged = dead_letter("evil", "profiles",
                         error_message="\x1b[2J\x1b]0;owned\x07[/][bold red]fake ok[/bold red]",
                         error_type="Boom[/]")
    assert forged.headers is not None
    forged.headers[m.H_LAST_FAILURE_AT] = 3e38
    forged.headers[m.H_FIRST_FAILURE_AT] = -3e38
    forged.headers[m.H_ATTEMPTS] = 3e38
    forged.headers[m.H_REPLAYS] = "not a list"
    forged.body = b'{"x": "\x1b[31mred"}'
    setup(s, "profiles", [forged, dead_letter("good", "profiles")])

    for args in (["list"], ["list", "--group"], ["show", "evil"], ["list", "--json"]):
        result = cli(e, *args)
        assert result.exit_code == 0, (args, result.output)
        assert "\x1b" not in result.output and "\x07" not in result.output, args
    listed = cli(e, "list").output
    assert "good" in listed and "evil" in listed
    assert "[/][bold red]fake ok" in cli(e, "show", "evil").output.replace("\n", "")

    result = cli(e, "purge", "--message-id", "evil", "--yes")
    assert result.exit_code == 0, result.output
    assert ids(s, "profiles.dlq") == ["good"]


def test_a_replay_goes_only_to_the_letters_own_work_queue(env: Any) -> None:
    """The target comes from a header the message carries: a forged one naming another
    consumer's queue is refused, the letter stays; a partition of its own consumer is fine."""
    s, e = env
    asyncio.run(_declare(s, "profiles", "ocr"))
    forged = dead_letter("hijack", "ocr")  # sits in profiles.dlq, claims to have failed in ocr
    asyncio.run(_publish(s, "profiles.dlq", [forged, dead_letter("own", "profiles")]))
    result = cli(e, "replay", "--queue", "profiles.dlq", "--json")
    assert result.exit_code == 1, result.output
    outcome = {o["message_id"]: o for o in json.loads(result.stdout)["messages"]}
    assert outcome["hijack"]["outcome"] == "failed"
    assert "only to its own work queue" in outcome["hijack"]["error"]
    assert outcome["own"]["outcome"] == "ok"
    assert ids(s, "ocr") == [] and ids(s, "profiles.dlq") == ["hijack"]
    assert replay_target_allowed("profiles.dlq", "profiles.p12")
    assert not replay_target_allowed("profiles.dlq", "profiles_evil")
    assert not replay_target_allowed("profiles.dlq", "profiles.p1x")
