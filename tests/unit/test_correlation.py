"""The correlation id: the product's own ContextVar, passed explicitly where it is known."""

from __future__ import annotations

import uuid
from typing import Any, cast

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from outbox.writer import Emitter, add_event
from shared import correlation
from shared.events import UserRegistered
from shared.messaging import H_CAUSATION_ID
from tests.support import handler_context


class CapturingSession:
    """Records the parameters of the outbox insert instead of running it."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    async def execute(self, _: object, params: dict[str, Any]) -> None:
        self.rows.append(params)


def event() -> UserRegistered:
    return UserRegistered(user_id=uuid.uuid4(), email="c@example.org")


def test_correlated_sets_and_restores_the_current_id() -> None:
    assert correlation.current() is None
    with correlation.correlated("outer"):
        with correlation.correlated("inner"):
            assert correlation.current() == "inner"
        assert correlation.current() == "outer"
    assert correlation.current() is None


def test_the_logging_context_is_not_where_the_id_lives() -> None:
    with structlog.contextvars.bound_contextvars(correlation_id="from-logs"):
        assert correlation.current() is None


async def test_an_event_written_in_a_request_takes_the_current_id() -> None:
    session = CapturingSession()
    with correlation.correlated("req-1"):
        await add_event(cast(AsyncSession, session), event())
    assert session.rows[0]["correlation_id"] == "req-1"


async def test_emit_passes_the_messages_ids_explicitly() -> None:
    session = CapturingSession()
    ctx = handler_context("user.registered", "profiles")
    ctx = type(ctx)(**{**ctx.__dict__, "correlation_id": "msg-corr"})
    with correlation.correlated("something-else"):
        await ctx.emit(cast(AsyncSession, session), event())
    row = session.rows[0]
    assert row["correlation_id"] == "msg-corr"
    assert f'"{H_CAUSATION_ID}": "{ctx.message_id}"' in row["headers"]


async def test_a_request_emits_with_its_correlation_and_no_causation() -> None:
    session = CapturingSession()
    with correlation.correlated("req-2"):
        emit = Emitter.current()
    await emit(cast(AsyncSession, session), event())
    row = session.rows[0]
    assert row["correlation_id"] == "req-2"
    assert H_CAUSATION_ID not in row["headers"]


def test_a_messages_context_emits_through_the_one_emitter() -> None:
    ctx = handler_context("user.registered", "profiles")
    assert ctx.emitter == Emitter(ctx.correlation_id, ctx.message_id)
