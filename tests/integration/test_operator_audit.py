"""The operator audit table (authdb ``operator_audit``) and every amsctl action that writes it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from alembic import command
from typer.testing import CliRunner

from amsctl.main import app
from apps.auth import audit
from apps.auth.audit import AuditAction, AuditFilter, AuditOutcome, AuditSource
from migrations.runner import alembic_config
from shared.config import Settings
from shared.db import asyncpg_dsn, create_engine, session_factory
from shared.errors import ValidationFailed
from tests.support import isolated_settings

runner = CliRunner()


@pytest.fixture(scope="module")
def cfg() -> Iterator[Settings]:
    with isolated_settings("audit") as s:
        yield s


@pytest.fixture
def env(cfg: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("AUTH_DATABASE_URL", cfg.database.auth_url)
    monkeypatch.setenv("SIGNING_KEY_KEK", cfg.tokens.signing_key_kek)
    monkeypatch.setenv("USERS_DATABASE_URL", cfg.database.users_url)
    monkeypatch.setenv("ADMIN_DATABASE_URL", cfg.database.admin_url)
    return cfg


def entries(cfg: Settings, **filters: object) -> list[audit.AuditEntry]:
    async def read() -> list[audit.AuditEntry]:
        engine = create_engine(cfg.database.auth_url, pool_size=1)
        try:
            return await audit.list_entries(session_factory(engine), AuditFilter(**filters))  # type: ignore[arg-type]
        finally:
            await engine.dispose()

    return asyncio.run(read())


async def _sql(url: str, statement: str, *args: object) -> object:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return await conn.execute(statement, *args)
    finally:
        await conn.close()


# --- the module -------------------------------------------------------------------------


async def test_record_and_list_with_filters(cfg: Settings) -> None:
    engine = create_engine(cfg.database.auth_url, pool_size=1)
    sessions = session_factory(engine)
    try:
        before = datetime.now(UTC) - timedelta(seconds=1)
        actor = f"ops-{uuid.uuid4().hex[:6]}@host"
        first = await audit.record(
            sessions, actor=actor, source=AuditSource.CONSOLE, action="dlq.replay",
            target="profiles.dlq", outcome=AuditOutcome.PARTIAL,
            details={"moved": 3, "failed": 1, "when": datetime(2026, 1, 1, tzinfo=UTC)},
        )
        second = await audit.record(
            sessions, actor=actor, source=AuditSource.CLI, action="keys.create",
            target="kid-1", outcome=AuditOutcome.OK,
        )
        assert first.id < second.id and first.at >= before
        assert first.details == {"moved": 3, "failed": 1, "when": "2026-01-01 00:00:00+00:00"}

        mine = await audit.list_entries(sessions, AuditFilter(actor=actor))
        assert [e.id for e in mine] == [second.id, first.id]  # newest first
        dlq = await audit.list_entries(sessions, AuditFilter(actor=actor, action="dlq."))
        assert [e.action for e in dlq] == ["dlq.replay"]
        partial = await audit.list_entries(sessions, AuditFilter(outcome=AuditOutcome.PARTIAL))
        assert first.id in {e.id for e in partial} and second.id not in {e.id for e in partial}
        page = await audit.list_entries(sessions, AuditFilter(actor=actor, before_id=second.id))
        assert [e.id for e in page] == [first.id]
        since = await audit.list_entries(sessions, AuditFilter(actor=actor, since=second.at))
        assert [e.id for e in since] == [second.id]

        with pytest.raises(ValidationFailed):
            await audit.record(sessions, actor=actor, source=AuditSource.CLI,
                               action="DROP TABLE x", target=None, outcome=AuditOutcome.OK)
        with pytest.raises(ValidationFailed):
            await audit.list_entries(sessions, AuditFilter(limit=0))
    finally:
        await engine.dispose()


@pytest.mark.parametrize("statement", [
    "UPDATE operator_audit SET outcome = 'ok'",
    "DELETE FROM operator_audit",
    "TRUNCATE operator_audit",
])
async def test_the_table_is_append_only_even_for_its_owner(cfg: Settings, statement: str) -> None:
    engine = create_engine(cfg.database.auth_url, pool_size=1)
    try:
        await audit.record(session_factory(engine), actor="a@h", source=AuditSource.CLI,
                           action="keys.create", target="k", outcome=AuditOutcome.OK)
    finally:
        await engine.dispose()
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await _sql(cfg.database.auth_url, statement)


# --- amsctl writes it -------------------------------------------------------------------


def test_keys_create_and_retire_are_recorded(env: Settings) -> None:
    result = runner.invoke(app, ["keys", "create"])
    assert result.exit_code == 0, result.output
    kid = result.output.split()[-1]
    [created] = entries(env, action=AuditAction.KEYS_CREATE, target=kid)
    assert created.outcome == "ok" and created.source == "cli" and "@" in created.actor

    assert runner.invoke(app, ["keys", "create"]).exit_code == 0  # the last live one stays
    result = runner.invoke(app, ["keys", "retire", kid, "--yes"])
    assert result.exit_code == 0, result.output
    [retired] = entries(env, action=AuditAction.KEYS_RETIRE, target=kid)
    assert retired.outcome == "ok" and retired.details == {"force": False}

    result = runner.invoke(app, ["keys", "retire", "no-such-kid", "--yes"])
    assert result.exit_code == 4
    [refused] = entries(env, action=AuditAction.KEYS_RETIRE, target="no-such-kid")
    assert refused.outcome == "denied" and "no-such-kid" in refused.details["error"]


def test_create_admin_is_recorded_without_the_password(env: Settings) -> None:
    email = f"Boss{uuid.uuid4().hex[:6]}@Example.com"
    secret = "a long admin secret"
    result = runner.invoke(app, ["users", "create-admin", "--email", email, "--password-stdin"],
                           input=secret + "\n")
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["users", "create-admin", "--email", email, "--password-stdin"],
                           input=secret + "\n")
    assert result.exit_code == 0, result.output
    rows = entries(env, action=AuditAction.USERS_CREATE_ADMIN, target=email.lower())
    outcomes = [(e.outcome, e.details["result"]) for e in rows]
    assert outcomes == [("ok", "granted"), ("ok", "created")]
    assert all(secret not in repr(e) for e in rows)

    result = runner.invoke(app, ["users", "create-admin", "--email", "weak@example.com",
                                 "--password-stdin"], input="password\n")
    assert result.exit_code == 2
    [weak] = entries(env, action=AuditAction.USERS_CREATE_ADMIN, target="weak@example.com")
    assert weak.outcome == "denied" and "password" not in weak.details.get("password", "")


async def _park_event(url: str) -> str:
    event_id = str(uuid.uuid4())
    await _sql(url, (
        "INSERT INTO outbox (event_id, event_type, routing_key, aggregate_type, aggregate_id,"
        " partition, schema_version, payload, attempts, last_error, parked_at) VALUES"
        " ($1, 'user.registered', 'user.registered', 'user', 'u1', 0, 1, '{}', 3, 'x', now())"
    ), uuid.UUID(event_id))
    return event_id


async def _parked(url: str, event_id: str) -> bool:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return bool(await conn.fetchval(
            "SELECT parked_at IS NOT NULL FROM outbox WHERE event_id = $1", uuid.UUID(event_id)))
    finally:
        await conn.close()


def test_outbox_requeue_is_recorded(env: Settings) -> None:
    event_id = asyncio.run(_park_event(env.database.users_url))
    result = runner.invoke(app, ["outbox", "requeue", "--database", "apidb",
                                 "--event-id", event_id])
    assert result.exit_code == 0, result.output
    [row] = entries(env, action=AuditAction.OUTBOX_REQUEUE, target=f"apidb:{event_id}")
    assert row.outcome == "ok" and row.details == {"requeued": 1}


def test_no_audit_table_no_action(monkeypatch: pytest.MonkeyPatch) -> None:
    """An action that could not be recorded is not done at all (exit 3, nothing changed)."""
    with isolated_settings("noaudit") as s:
        command.downgrade(alembic_config("authdb", s.database.auth_url), "authdb_0004")
        event_id = asyncio.run(_park_event(s.database.admin_url))
        monkeypatch.setenv("AUTH_DATABASE_URL", s.database.auth_url)
        monkeypatch.setenv("SIGNING_KEY_KEK", s.tokens.signing_key_kek)
        monkeypatch.setenv("ADMIN_DATABASE_URL", s.database.admin_url)
        result = runner.invoke(app, ["outbox", "requeue", "--database", "admindb",
                                     "--event-id", event_id])
        assert result.exit_code == 3, result.output
        assert "audit table is missing" in result.output
        assert asyncio.run(_parked(s.database.admin_url, event_id)), "requeued unrecorded"

        result = runner.invoke(app, ["keys", "create"])
        assert result.exit_code == 3, result.output
