"""Handler sessions: the transaction guard.

A handler gets an ``AsyncSession`` whose transaction only the runtime ends: the runtime adds
the inbox row to the handler's transaction and commits both, or neither.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

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

