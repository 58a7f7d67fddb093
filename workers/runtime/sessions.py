"""Handlers and their sessions: the handler types, the transaction guard, and the engine a
consumer's handlers share.

A handler gets an ``AsyncSession`` whose transaction only the runtime ends: the runtime adds
the inbox row to the handler's transaction and commits both, or neither.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from shared import tracing
from shared.config import Settings
from shared.db import create_engine
from workers.runtime.context import MessageContext

Handler = Callable[[AsyncSession, Any, MessageContext], Awaitable[None]]
"""``async def handler(session, message: SomeEvent, ctx) -> None``.

A handler puts every effect in ``session`` and never commits or rolls it back itself: the
runtime adds the inbox row to that same transaction and commits both, or neither (a
handler's own commit or rollback raises :class:`HandlerContractError`). Work
outside the database (OCR) may come before the first statement; the transaction begins
there.

The message parameter is typed ``Any`` here because a handler accepts one concrete event
class, and callables are contravariant in their parameters."""


BatchHandler = Callable[[AsyncSession, Sequence[tuple[Any, MessageContext]]], Awaitable[None]]
"""``async def handler(session, items: Sequence[tuple[SomeEvent, MessageContext]]) -> None``:
the batch form of a handler (:class:`Batched`)."""


@dataclass(frozen=True)
class Batched:
    """A handler with a batch form, as a value of a consumer's handler table.

    ``one`` handles a message on its own: when it arrives alone, when the consumer runs
    one message per transaction, and for each message again after its batch failed.
    ``many`` gets the messages of one event type in a batch, each new to the inbox and of
    an aggregate of its own, and must have the effects ``one`` would have for each of them
    in turn, in fewer statements (``INSERT … SELECT FROM unnest(…)``, ``emit_each``). The
    same transaction rules apply. Nothing is bound per message around it (correlation id,
    log keys, trace context): it takes them from each ``MessageContext`` (``ctx.emitter``
    carries all three on to the follow-up events). If it raises, the batch rolls back and
    each of its messages runs through ``one`` in a transaction of its own, so a bad
    message fails alone.
    """

    one: Handler
    many: BatchHandler

    def __call__(self, session: AsyncSession, message: Any, ctx: MessageContext) -> Awaitable[None]:
        return self.one(session, message, ctx)


class HandlerContractError(RuntimeError):
    """A handler ended the runtime's transaction itself (committed or rolled back)."""


_RUNTIME_ENDS = "ams_runtime_ends_transaction"


class HandlerSession(Session):
    """The session behind a handler's ``AsyncSession``: only the runtime ends its transaction.

    A handler that committed would commit its effects without the inbox row (a redelivery
    would apply them twice); one that rolled back would let the inbox row commit without
    the effects. Both are refused with an error naming the rule, so the message is retried
    and then dead-lettered with that reason, and nothing half-done is committed.
    """

    def commit(self) -> None:
        self._runtime_only("commit")
        super().commit()

    def rollback(self) -> None:
        self._runtime_only("rollback")
        super().rollback()

    def _runtime_only(self, what: str) -> None:
        if not self.info.get(_RUNTIME_ENDS):
            raise HandlerContractError(
                f"a handler must not {what} its session: the runtime commits the handler's "
                "effects together with the inbox row, or rolls both back"
            )


def handler_sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions for handlers (:class:`HandlerSession`); objects stay usable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False, sync_session_class=HandlerSession)


async def end_transaction(session: AsyncSession, *, commit: bool) -> None:
    """Commit or roll back as the runtime (a handler may not, see :class:`HandlerSession`)."""
    session.info[_RUNTIME_ENDS] = True
    try:
        await (session.commit() if commit else session.rollback())
    finally:
        session.info.pop(_RUNTIME_ENDS, None)


def runtime_engine(
    settings: Settings, database: str, *, batch_max: int | None = None
) -> AsyncEngine:
    """The engine a consumer's runtime, handlers and background tasks share (no I/O yet)."""
    batch = batch_max or settings.worker.batch_max

    def make() -> AsyncEngine:
        return create_engine(
            settings.database.url(database),
            pool_size=max(settings.database.pool_size, 1),
            # A batch that fails on a dead connection is run again message by message, on
            # fresh connections (the failure invalidates the pool): no ping needed. One
            # message per transaction (OCR) keeps the ping: no attempt is wasted.
            pre_ping=batch == 1,
        )

    # Statement and connection-checkout spans cost a busy worker more than its consume and
    # handle spans: recorded only when asked for.
    return make() if settings.worker.trace_statements else tracing.untraced_engine(make)
