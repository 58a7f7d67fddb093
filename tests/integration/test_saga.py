"""The user-deletion saga against real PostgreSQL (three databases), RabbitMQ and Redis.

The auth API runs in-process (ASGI), the relay and the consumers in the test's event loop
(:class:`tests.saga_support.SagaStack`), the saga worker as a real process where it is
killed with SIGKILL. Short timeouts and retry delays come from the settings.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from litestar.testing import AsyncTestClient
from prometheus_client import REGISTRY

import outbox
from apps.auth.app import create_app
from apps.auth.passwords import Argon2Passwords
from apps.auth.sagas import SqlSagaStore, start_deletion
from apps.auth.services import register_user
from shared.config import Settings
from shared.db import session_factory
from shared.events import (
    DocumentsDeleted,
    DocumentsDeletionFailed,
    ProfileDeleted,
    ProfileRestored,
)
from shared.topology_apply import apply_topology
from tests.saga_support import (
    ROOT,
    SagaStack,
    env_for,
    queue_depth,
    tap,
    wait_consuming,
    worker_process,
)
from tests.support import isolated_settings
from workers.runtime.context import MessageContext
from workers.saga import Orchestrator, Sweeper, compensation_failed_reason

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def saga_settings() -> Iterator[Settings]:
    with isolated_settings(
        "saga",
        redis_key_prefix=f"t{uuid.uuid4().hex[:8]}:",
        worker_retry_delays="100ms,200ms",
        worker_max_attempts=3,
        worker_metrics_port=0,
        worker_shutdown_timeout_s=3.0,
        saga_step_timeout_s=15.0,
        saga_compensation_timeout_s=3.0,
        saga_sweep_interval_s=0.2,
        relay_poll_max_s=0.2,
        argon2_time_cost=1, argon2_allow_weak=True,
        argon2_memory_kib=8192,
        log_level="WARNING",
    ) as s:
        asyncio.run(apply_topology(s))
        yield s


@pytest.fixture
async def client(saga_settings: Settings) -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(create_app(saga_settings)) as c:
        yield c


def _email() -> str:
    return f"saga.{uuid.uuid4().hex[:10]}@example.com"


async def _register(client: AsyncTestClient[Any]) -> tuple[str, str, dict[str, Any]]:
    address = _email()
    r = await client.post(
        "/auth/register", json={"email": address, "password": PASSWORD, "display_name": "Del"}
    )
    assert r.status_code == 201, r.text
    user_id = r.json()["user_id"]
    return address, user_id, await _login(client, address)


async def _login(client: AsyncTestClient[Any], address: str) -> dict[str, Any]:
    r = await client.post("/auth/login", json={"email": address, "password": PASSWORD})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def _admin_token(client: AsyncTestClient[Any], settings: Settings) -> str:
    address = _email()
    passwords = Argon2Passwords(time_cost=1, memory_kib=8192, parallelism=1)
    engine_url = settings.database.auth_url
    from shared.db import create_engine

    engine = create_engine(engine_url, pool_size=1)
    try:
        await register_user(
            session_factory(engine), passwords, address, PASSWORD, None, ("user", "admin")
        )
    finally:
        passwords.close()
        await engine.dispose()
    return str((await _login(client, address))["access_token"])


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _add_document(stack: SagaStack, owner: str, *, legal_hold: bool = False) -> str:
    doc_id = str(uuid.uuid4())
    async with stack.engines["admindb"].begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO documents (id, owner_id, filename, media_type, size_bytes, sha256,"
                " page_count, status, legal_hold) VALUES (:id, :owner, 'a.png', 'image/png', 3,"
                " 'x', 1, 'completed', :hold)"
            ),
            {"id": doc_id, "owner": owner, "hold": legal_hold},
        )
    return doc_id


async def _user_with_profile(
    client: AsyncTestClient[Any], stack: SagaStack
) -> tuple[str, str, dict[str, Any]]:
    address, user_id, tokens = await _register(client)
    await stack.wait_for(
        "apidb", "SELECT 1 FROM profiles WHERE user_id = :u", lambda r: r is not None, u=user_id
    )
    return address, user_id, tokens


async def _delete(client: AsyncTestClient[Any], user_id: str, token: str) -> str:
    r = await client.delete(f"/auth/users/{user_id}", headers=_auth(token))
    assert r.status_code == 202, r.text
    return str(r.json()["saga_id"])


# --- happy path ----------------------------------------------------------------------------
async def test_happy_path_deletes_across_three_databases(
    client: AsyncTestClient[Any], saga_settings: Settings
) -> None:
    async with SagaStack(saga_settings) as stack:
        for name in ("profiles", "documents", "saga"):
            await stack.start(name)
        deleted_tap = await tap(saga_settings, "user.deleted")
        address, user_id, tokens = await _user_with_profile(client, stack)
        doc_id = await _add_document(stack, user_id)
        other = await _add_document(stack, str(uuid.uuid4()))  # another user's: untouched

        saga_id = await _delete(client, user_id, tokens["access_token"])
        # At once: login and refresh refused, the access token revoked; asking again is 202.
        r = await client.post("/auth/login", json={"email": address, "password": PASSWORD})
        assert r.status_code == 401
        r = await client.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
        assert r.status_code == 401
        assert (
            await client.get("/auth/me", headers=_auth(tokens["access_token"]))
        ).status_code == 401

        saga = await stack.wait_status(saga_id, "completed", "compensated", "compensation_failed")
        assert saga.status == "completed", saga
        assert (
            await stack.scalar("authdb", "SELECT status FROM users WHERE id = :u", u=user_id)
            == "deleted"
        )
        profile = await stack.one(
            "apidb", "SELECT deleted_at FROM profiles WHERE user_id = :u", u=user_id
        )
        assert profile.deleted_at is not None
        assert (
            await stack.scalar("admindb", "SELECT count(*) FROM documents WHERE id = :d", d=doc_id)
            == 0
        )
        assert (
            await stack.scalar("admindb", "SELECT count(*) FROM documents WHERE id = :d", d=other)
            == 1
        )
        steps = await stack.steps(saga_id)
        assert list(steps) == ["profile.delete", "documents.delete", "user.delete"]
        assert all(
            s.status == "completed" and s.finished_at >= s.started_at for s in steps.values()
        )
        assert steps["documents.delete"].detail == "1 document(s) deleted"
        assert await _eventually_depth(saga_settings, deleted_tap, 1) == 1  # user.deleted, once

        # The admin sees the saga over HTTP, with its steps.
        admin = await _admin_token(client, saga_settings)
        r = await client.get(f"/auth/sagas/{saga_id}", headers=_auth(admin))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "completed"
        assert [s["name"] for s in body["steps"]] == [
            "profile.delete",
            "documents.delete",
            "user.delete",
        ]
        assert all(s["finished_at"] for s in body["steps"])

        # Duplicate replies with new message ids, through the broker: recognised, no effect.
        for db, reply in (
            ("apidb", ProfileDeleted(saga_id=uuid.UUID(saga_id), user_id=uuid.UUID(user_id))),
            (
                "admindb",
                DocumentsDeleted(saga_id=uuid.UUID(saga_id), user_id=uuid.UUID(user_id), count=1),
            ),
        ):
            async with stack.engines[db].begin() as conn:
                from sqlalchemy.ext.asyncio import AsyncSession

                async with AsyncSession(bind=conn) as session:
                    await outbox.add_event(session, reply)
                    await session.commit()
        await stack.wait_for(
            "authdb",
            "SELECT sum(late_replies) AS n FROM saga_steps WHERE saga_id = :s",
            lambda r: r.n == 2,
            s=saga_id,
        )
        assert (await stack.wait_status(saga_id, "completed")).status == "completed"
        await asyncio.sleep(0.5)
        assert await queue_depth(saga_settings, deleted_tap) == 1  # still one user.deleted


async def _eventually_depth(settings: Settings, queue: str, expected: int) -> int:
    for _ in range(100):
        depth = await queue_depth(settings, queue)
        if depth >= expected:
            return depth
        await asyncio.sleep(0.1)
    return await queue_depth(settings, queue)


async def test_another_user_may_not_delete_or_see_the_saga(
    client: AsyncTestClient[Any], saga_settings: Settings
) -> None:
    _, victim, victim_tokens = await _register(client)
    _, _, intruder = await _register(client)
    r = await client.delete(f"/auth/users/{victim}", headers=_auth(intruder["access_token"]))
    assert r.status_code == 403
    async with SagaStack(saga_settings):  # no consumers: the saga just waits
        saga_id = await _delete(client, victim, victim_tokens["access_token"])
    r = await client.get(f"/auth/sagas/{saga_id}", headers=_auth(intruder["access_token"]))
    assert r.status_code == 404


# --- legal hold ----------------------------------------------------------------------------
async def test_legal_hold_compensates_and_user_can_log_in_again(
    client: AsyncTestClient[Any], saga_settings: Settings
) -> None:
    async with SagaStack(saga_settings) as stack:
        for name in ("profiles", "documents", "saga"):
            await stack.start(name)
        address, user_id, tokens = await _user_with_profile(client, stack)
        free = await _add_document(stack, user_id)
        held = await _add_document(stack, user_id, legal_hold=True)

        saga_id = await _delete(client, user_id, tokens["access_token"])
        saga = await stack.wait_status(saga_id, "completed", "compensated", "compensation_failed")

        assert saga.status == "compensated", saga
        assert "legal hold" in saga.reason
        assert saga.reason.startswith("documents.delete failed")
        steps = await stack.steps(saga_id)
        assert [(n, s.status) for n, s in steps.items()] == [
            ("profile.delete", "completed"),
            ("documents.delete", "failed"),
            ("profile.restore", "completed"),
            ("user.reactivate", "completed"),
        ]
        assert steps["profile.restore"].kind == "compensation"
        # All or nothing for the user: active, profile live, both documents still there.
        assert (
            await stack.scalar("authdb", "SELECT status FROM users WHERE id = :u", u=user_id)
            == "active"
        )
        profile = await stack.one(
            "apidb", "SELECT deleted_at, display_name FROM profiles WHERE user_id = :u", u=user_id
        )
        assert profile.deleted_at is None
        assert profile.display_name == "Del"
        assert (
            await stack.scalar(
                "admindb", "SELECT count(*) FROM documents WHERE id IN (:a, :b)", a=free, b=held
            )
            == 2
        )
        fresh = await _login(client, address)
        r = await client.get("/auth/me", headers=_auth(fresh["access_token"]))
        assert r.status_code == 200
        assert r.json()["status"] == "active"
        # The user follows their own saga.
        r = await client.get(f"/auth/sagas/{saga_id}", headers=_auth(fresh["access_token"]))
        assert r.status_code == 200
        assert r.json()["status"] == "compensated"


# --- duplicate and out-of-order replies (the state machine, handler by handler) -----------------
def _ctx(event_type: str) -> MessageContext:
    return MessageContext(
        message_id=str(uuid.uuid4()),
        event_type=event_type,
        correlation_id="corr-saga",
        causation_id=None,
        headers={},
        redelivered=False,
        attempts=0,
        consumer="saga",
    )


async def test_duplicate_and_out_of_order_replies_change_nothing(
    client: AsyncTestClient[Any], saga_settings: Settings
) -> None:
    _, user_id, _ = await _register(client)
    uid = uuid.UUID(user_id)
    orchestrator = Orchestrator(SqlSagaStore(), step_timeout_s=60, compensation_timeout_s=60)
    async with SagaStack(saga_settings, relay=False) as stack:  # commands stay in the outbox
        sessions = session_factory(stack.engines["authdb"])

        async def deliver(handler: Any, message: Any) -> None:
            async with sessions() as session, session.begin():
                await handler(session, message, _ctx(message.event_type))

        async with sessions() as session, session.begin():
            await session.execute(
                sa.text("UPDATE users SET status = 'deleting' WHERE id = :u"), {"u": uid}
            )
            sid = await start_deletion(session, uid, requested_by=uid, step_timeout_s=60)

        async def commands(event_type: str) -> int:
            return int(
                await stack.scalar(
                    "authdb",
                    # By the saga named in the payload: profile commands are keyed on the
                    # user (ordered after user.registered), documents.delete on the saga.
                    "SELECT count(*) FROM outbox WHERE payload->>'saga_id' = :s "
                    "AND event_type = :t",
                    s=str(sid),
                    t=event_type,
                )
            )

        # Out of order: replies for steps that have not started are ignored.
        await deliver(
            orchestrator.on_documents_deleted, DocumentsDeleted(saga_id=sid, user_id=uid, count=3)
        )
        await deliver(orchestrator.on_profile_restored, ProfileRestored(saga_id=sid, user_id=uid))
        saga = await stack.one("authdb", "SELECT * FROM sagas WHERE id = :s", s=sid)
        assert (saga.status, saga.current_step) == ("running", "profile.delete")
        assert await commands("documents.delete") == 0
        assert await commands("profile.restore") == 0

        # The expected reply moves it on; the same reply again (new message id) does not.
        await deliver(orchestrator.on_profile_deleted, ProfileDeleted(saga_id=sid, user_id=uid))
        await deliver(orchestrator.on_profile_deleted, ProfileDeleted(saga_id=sid, user_id=uid))
        assert await commands("documents.delete") == 1
        steps = await stack.steps(sid)
        assert steps["profile.delete"].status == "completed"
        assert steps["profile.delete"].late_replies == 1

        # A failure reply starts compensation; a success arriving after it is late.
        await deliver(
            orchestrator.on_documents_deletion_failed,
            DocumentsDeletionFailed(saga_id=sid, user_id=uid, reason="legal hold"),
        )
        await deliver(
            orchestrator.on_documents_deleted, DocumentsDeleted(saga_id=sid, user_id=uid, count=1)
        )
        await deliver(
            orchestrator.on_documents_deletion_failed,
            DocumentsDeletionFailed(saga_id=sid, user_id=uid, reason="legal hold"),
        )
        saga = await stack.one("authdb", "SELECT * FROM sagas WHERE id = :s", s=sid)
        assert (saga.status, saga.current_step) == ("compensating", "profile.restore")
        assert await commands("profile.restore") == 1
        assert (await stack.steps(sid))["documents.delete"].late_replies == 2
        assert (
            await stack.scalar("authdb", "SELECT status FROM users WHERE id = :u", u=uid)
            == "deleting"
        )

        await deliver(orchestrator.on_profile_restored, ProfileRestored(saga_id=sid, user_id=uid))
        await deliver(orchestrator.on_profile_restored, ProfileRestored(saga_id=sid, user_id=uid))
        saga = await stack.one("authdb", "SELECT * FROM sagas WHERE id = :s", s=sid)
        assert saga.status == "compensated"
        assert saga.reason == "documents.delete failed: legal hold"
        assert (
            await stack.scalar("authdb", "SELECT status FROM users WHERE id = :u", u=uid)
            == "active"
        )
        assert (await stack.steps(sid))["profile.restore"].late_replies == 1


# --- timeouts ------------------------------------------------------------------------------------
async def test_participant_that_never_answers_times_out_and_compensates(
    saga_settings: Settings,
) -> None:
    quick = saga_settings.replace(saga_step_timeout_s=1.5)
    async with AsyncTestClient(create_app(quick)) as client, SagaStack(quick) as stack:
        await stack.start("profiles")
        # The real saga worker process, with its sweeper; no documents worker, so
        # documents.delete is never answered.
        worker = worker_process(quick, "saga")
        try:
            # The step timeout is short: the saga worker must be up before the saga starts.
            await wait_consuming(quick, "saga")
            address, user_id, tokens = await _user_with_profile(client, stack)
            doc_id = await _add_document(stack, user_id)

            saga_id = await _delete(client, user_id, tokens["access_token"])
            saga = await stack.wait_status(
                saga_id, "completed", "compensated", "compensation_failed"
            )

            assert saga.status == "compensated", saga
            assert saga.reason == "documents.delete did not answer within 1.5s"
            steps = await stack.steps(saga_id)
            assert steps["documents.delete"].status == "timed_out"
            assert steps["profile.restore"].status == "completed"
            assert (
                await stack.scalar("authdb", "SELECT status FROM users WHERE id = :u", u=user_id)
                == "active"
            )
            await _login(client, address)

            # The documents worker comes back: it refuses the expired command; nothing is deleted.
            await stack.start("documents")
            await stack.wait_for(
                "authdb",
                "SELECT late_replies FROM saga_steps"
                " WHERE saga_id = :s AND name = 'documents.delete'",
                lambda r: r.late_replies == 1,
                s=saga_id,
            )
            assert (
                await stack.scalar(
                    "admindb", "SELECT count(*) FROM documents WHERE id = :d", d=doc_id
                )
                == 1
            )
            assert (await stack.wait_status(saga_id, "compensated")).status == "compensated"
        finally:
            _end(worker)


async def test_failing_compensation_ends_in_compensation_failed_with_a_dead_letter(
    client: AsyncTestClient[Any], saga_settings: Settings, tmp_path: Path
) -> None:
    async with SagaStack(saga_settings) as stack:
        for name in ("profiles", "saga"):
            await stack.start(name)
        _, user_id, tokens = await _user_with_profile(client, stack)
        await _add_document(stack, user_id, legal_hold=True)
        dlq_before = await queue_depth(saga_settings, "profiles.dlq")

        # Someone holds the profile row: every profile.restore attempt fails (NOWAIT).
        async with stack.engines["apidb"].connect() as blocker:
            txn = await blocker.begin()
            saga_id = await _delete(client, user_id, tokens["access_token"])
            await stack.wait_for(
                "authdb",
                "SELECT status FROM saga_steps WHERE saga_id = :s AND name = 'profile.delete'",
                lambda r: r is not None and r.status == "completed",
                s=saga_id,
            )
            await blocker.execute(
                sa.text("SELECT 1 FROM profiles WHERE user_id = :u FOR UPDATE"), {"u": user_id}
            )
            await stack.start("documents")  # legal hold -> profile.restore, which keeps failing
            saga = await stack.wait_status(
                saga_id, "compensated", "compensation_failed", timeout_s=30
            )
            await txn.rollback()

        assert saga.status == "compensation_failed", saga
        assert saga.reason == "profile.restore did not complete; see dead-letter queue profiles.dlq"
        assert saga.reason == compensation_failed_reason()
        steps = await stack.steps(saga_id)
        assert steps["profile.restore"].status == "timed_out"
        assert "user.reactivate" not in steps  # never silently marked done
        assert (
            await stack.scalar("authdb", "SELECT status FROM users WHERE id = :u", u=user_id)
            == "deleting"
        )
        assert await queue_depth(saga_settings, "profiles.dlq") == dlq_before + 1

        # The operator sees both: the saga's state and the dead letter waiting.
        shown = _amsctl(saga_settings, "saga", "show", saga_id)
        assert shown.returncode == 0, shown.stderr
        assert "compensation_failed" in shown.stdout
        assert "dead-letter queue profiles.dlq" in shown.stdout
        assert f"dead letters in profiles.dlq: {dlq_before + 1}" in shown.stdout
        listed = _amsctl(saga_settings, "saga", "list", "--status", "compensation_failed", "--json")
        assert listed.returncode == 0, listed.stderr
        assert [s["saga_id"] for s in json.loads(listed.stdout)] == [saga_id]
        wrong = _amsctl(saga_settings, "saga", "list", "--status", "finished")
        assert wrong.returncode == 2
        assert _amsctl(saga_settings, "saga", "show", str(uuid.uuid4())).returncode == 4

        # With the lock gone, replaying the dead letter completes the compensation after all.
        replayed = _amsctl(
            saga_settings,
            "dlq",
            "replay",
            "--queue",
            "profiles.dlq",
            "--reason",
            "lock released",
            AMSCTL_AUDIT_LOG=str(tmp_path / "audit.jsonl"),
        )
        assert replayed.returncode == 0, replayed.stdout + replayed.stderr
        saga = await stack.wait_status(saga_id, "compensated")
        assert saga.reason.endswith("recovered later")
        assert (
            await stack.scalar("authdb", "SELECT status FROM users WHERE id = :u", u=user_id)
            == "active"
        )
        assert (await stack.steps(saga_id))["profile.restore"].status == "completed"


def _amsctl(settings: Settings, *args: str, **env_extra: str) -> subprocess.CompletedProcess[str]:
    env = env_for(settings, COLUMNS="250", **env_extra)
    return subprocess.run(
        [sys.executable, "-m", "amsctl", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# --- kill -9 ----------------------------------------------------------------------------------
async def test_orchestrator_killed_mid_saga_still_finishes(
    client: AsyncTestClient[Any], saga_settings: Settings
) -> None:
    async with SagaStack(saga_settings) as stack:
        await stack.start("profiles")
        _, user_id, tokens = await _user_with_profile(client, stack)
        await _add_document(stack, user_id)
        worker = worker_process(saga_settings, "saga")
        try:
            saga_id = await _delete(client, user_id, tokens["access_token"])
            # profile.deleted handled, documents.delete sent; nobody answers it yet.
            await stack.wait_step(saga_id, "documents.delete")
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait(10)
            await stack.start("documents")  # its reply waits in the saga queue
            await stack.wait_for(
                "admindb",
                "SELECT count(*) AS n FROM documents WHERE owner_id = :u",
                lambda r: r.n == 0,
                u=user_id,
            )
            worker = worker_process(saga_settings, "saga")
            saga = await stack.wait_status(saga_id, *FINAL)
        finally:
            _end(worker)
        assert saga.status == "completed", saga
        assert await _user_status(stack, user_id) == "deleted"


async def test_participant_killed_mid_saga_still_finishes(
    client: AsyncTestClient[Any], saga_settings: Settings
) -> None:
    async with SagaStack(saga_settings) as stack:
        await stack.start("profiles")
        await stack.start("saga")
        _, user_id, tokens = await _user_with_profile(client, stack)
        await _add_document(stack, user_id)
        worker = worker_process(saga_settings, "documents")
        try:
            saga_id = await _delete(client, user_id, tokens["access_token"])
            await stack.wait_step(saga_id, "documents.delete")
            os.kill(worker.pid, signal.SIGKILL)  # before, during or after its transaction
            worker.wait(10)
            worker = worker_process(saga_settings, "documents")
            saga = await stack.wait_status(saga_id, *FINAL)
        finally:
            _end(worker)
        assert saga.status == "completed", saga
        assert (
            await stack.scalar(
                "admindb", "SELECT count(*) FROM documents WHERE owner_id = :u", u=user_id
            )
            == 0
        )


# --- several sweepers -----------------------------------------------------------------------
async def test_concurrent_sweepers_fail_each_overdue_step_once(
    client: AsyncTestClient[Any], saga_settings: Settings
) -> None:
    orchestrator = Orchestrator(SqlSagaStore(), step_timeout_s=0.01, compensation_timeout_s=60)
    async with SagaStack(saga_settings, relay=False) as stack:
        sessions = session_factory(stack.engines["authdb"])
        saga_ids = []
        for _ in range(6):
            _, user_id, _ = await _register(client)
            async with sessions() as session, session.begin():
                uid = uuid.UUID(user_id)
                saga_ids.append(
                    await start_deletion(session, uid, requested_by=uid, step_timeout_s=0.01)
                )
        await asyncio.sleep(0.05)
        handled = await asyncio.gather(*(orchestrator.sweep(sessions) for _ in range(3)))
        handled_again = await orchestrator.sweep(sessions)
        for sid in saga_ids:
            saga = await stack.one("authdb", "SELECT * FROM sagas WHERE id = :s", s=sid)
            assert saga.status == "compensating"
            assert saga.reason == "profile.delete did not answer within 0.01s"
            restores = await stack.scalar(
                "authdb",
                "SELECT count(*) FROM outbox WHERE payload->>'saga_id' = :s AND event_type = :t",
                s=str(sid),
                t="profile.restore",
            )
            assert restores == 1
        # The sweeper's gauge counts them (the module's database has other tests' sagas too).
        compensating = await stack.scalar(
            "authdb", "SELECT count(*) FROM sagas WHERE status = 'compensating'"
        )
        await Sweeper(orchestrator, sessions, 1.0)._count()
    assert sum(handled) >= len(saga_ids)
    assert handled_again == 0
    assert compensating >= len(saga_ids)
    assert REGISTRY.get_sample_value("ams_saga_sagas", {"status": "compensating"}) == compensating
    assert REGISTRY.get_sample_value("ams_saga_sagas", {"status": "compensation_failed"}) == 0


FINAL = ("completed", "compensated", "compensation_failed")


async def _user_status(stack: SagaStack, user_id: str) -> str:
    return str(await stack.scalar("authdb", "SELECT status FROM users WHERE id = :u", u=user_id))


def _end(worker: subprocess.Popen[bytes]) -> None:
    worker.terminate()
    try:
        worker.wait(10)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait(5)
