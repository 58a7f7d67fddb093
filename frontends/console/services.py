"""What the console does as an operator tool, on the same code as ``amsctl``.

Dead letters go through :mod:`amsctl.dlq.service` (the CLI's guarantees: confirm before
removal, back to the queue it failed in), the outbox through :mod:`amsctl.outbox`, sagas
through :mod:`apps.auth.sagas`, the audit trail through :mod:`apps.auth.audit`. Every change
opens the audit trail first (:func:`amsctl.audit.trail`: no audit table, no action) and is
recorded under the signed-in admin's identity with source ``console``.

The broker: one connection for the console process (:class:`shared.broker.KeptConnection`),
opened at the first page that needs it, opened again after it was lost, closed on shutdown;
each read or move takes channels of its own on it, as ``amsctl dlq`` does on its connection.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from aio_pika.abc import AbstractConnection
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from amsctl import outbox as outbox_ops
from amsctl.audit import trail
from amsctl.dlq import service as dlq
from amsctl.dlq.broker import CONNECT_TIMEOUT_S, AmqpDeadLetterStore, QueueInfo
from amsctl.dlq.model import DeadLetter, Selection
from apps.auth import audit, sagas
from apps.auth.audit import AuditEntry, AuditFilter, AuditSource
from apps.auth.schemas import Saga
from shared.broker import CONNECT_ERRORS, KeptConnection, connection_lost
from shared.config import DATABASES, Settings
from shared.errors import DependencyUnavailable, NotFound, ValidationFailed
from shared.topology import SAGA_DEAD_LETTER_QUEUES

T = TypeVar("T")


@dataclass(frozen=True)
class Admin:
    """Who acts: the signed-in admin, as the audit trail names them."""

    email: str
    user_id: str

    @property
    def actor(self) -> str:
        return self.email


@dataclass(frozen=True)
class ReplayPlan:
    """A dry run: what a replay or purge would move, and where to."""

    action: str
    letters: list[DeadLetter]
    request: dlq.MoveRequest


class Operations:
    """The console's operator actions and views."""

    def __init__(self, settings: Settings, authdb: async_sessionmaker[AsyncSession], *,
                 audit: async_sessionmaker[AsyncSession] | None = None) -> None:
        self.settings = settings
        self.authdb = authdb
        self.auditdb = audit or authdb
        """Where the audit table is read (``AUDIT_DATABASE_URL``; default: authdb's)."""
        self.broker = KeptConnection(settings.broker.url, name="console",
                                     connect_timeout_s=CONNECT_TIMEOUT_S)

    async def close(self) -> None:
        """Close the broker connection (the app's shutdown)."""
        await self.broker.close()

    # --- dead letters ------------------------------------------------------------------------
    async def dead_letters(self, selection: Selection, queue: str | None = None
                           ) -> list[DeadLetter]:
        async def read(store: AmqpDeadLetterStore) -> list[DeadLetter]:
            queues = await _resolve(store, [queue] if queue else None)
            return await dlq.read(store, queues, selection, self.settings.operator.dlq_read_limit)
        return await self._reading(read)

    async def overview(self, selection: Selection, queue: str | None
                       ) -> tuple[list[QueueInfo], list[DeadLetter]]:
        """Every dead-letter queue and the selected letters (of one queue, if it is one of
        them), from one queue listing."""
        async def read(store: AmqpDeadLetterStore) -> tuple[list[QueueInfo], list[DeadLetter]]:
            queues = await _resolve(store, None)
            chosen = [q for q in queues if q.name == queue] or queues
            limit = self.settings.operator.dlq_read_limit
            letters = await dlq.read(store, chosen, selection, limit)
            # The queues just read show AMQP's current depth: the listing's figure is
            # sampled, and a letter that arrived seconds ago was counted 0 beside itself.
            return [replace(q, messages=store.depths.get(q.name, q.messages))
                    for q in queues], letters
        return await self._reading(read)

    async def dead_letter(self, message_id: str) -> tuple[DeadLetter, list[dict[str, object]]]:
        """One dead letter in full and its replay/purge history. The history is a scan of
        the whole audit log file (it only grows): read in a thread, off the event loop."""
        found = await self.dead_letters(Selection(message_ids=frozenset({message_id})))
        if not found:
            raise NotFound(f"no dead letter with message id {message_id}")
        return found[0], await asyncio.to_thread(dlq.history, self.settings, message_id)

    async def preview(self, request: dlq.MoveRequest) -> ReplayPlan:
        async def read(store: AmqpDeadLetterStore) -> list[DeadLetter]:
            queues = await _resolve(store, request.queues)
            limit = self.settings.operator.dlq_read_limit
            return await dlq.preview(store, queues, request, limit)
        return ReplayPlan(request.action, await self._reading(read), request)

    async def move(self, admin: Admin, request: dlq.MoveRequest) -> dlq.MoveResult:
        """Replay or purge exactly as ``amsctl dlq`` does, audited under the admin's name."""
        connection = await self._connection()
        async with AmqpDeadLetterStore(self.settings, connection=connection) as store:
            queues = await _resolve(store, request.queues)
            async with trail(self.settings, actor=admin.actor,
                             source=AuditSource.CONSOLE) as audit_trail:
                return await dlq.move(store, self.settings, queues, request, audit_trail)

    # --- outbox ------------------------------------------------------------------------------
    async def outbox(self) -> list[dict[str, Any]]:
        """Status and parked events of every database's outbox."""
        rows = await outbox_ops.statuses(self.settings, DATABASES)
        for row in rows:
            database = str(row["database"])
            row["parked_events"] = (
                await outbox_ops.parked_events(self.settings, database)
                if row["parked"] else []
            )
        return rows

    async def requeue(self, admin: Admin, database: str, event_ids: list[str] | None) -> int:
        async with trail(self.settings, actor=admin.actor,
                         source=AuditSource.CONSOLE) as audit_trail:
            return await outbox_ops.requeue_audited(self.settings, audit_trail, database,
                                                    event_ids)

    # --- sagas -------------------------------------------------------------------------------
    async def sagas(self, status: str | None, limit: int = 100) -> list[Saga]:
        async with self.authdb() as session:
            return await sagas.list_sagas(session, status=status, limit=limit)

    async def saga(self, saga_id: uuid.UUID) -> Saga:
        async with self.authdb() as session:
            view = await sagas.load(session, saga_id)
        if view is None:
            raise NotFound(f"no saga {saga_id}")
        return view

    async def letters_of_saga(self, saga_id: uuid.UUID) -> list[DeadLetter]:
        """The dead letters that belong to a saga: its commands and replies name it."""
        async def read(store: AmqpDeadLetterStore) -> list[DeadLetter]:
            queues = [q for q in await _resolve(store, None)
                      if q.name in SAGA_DEAD_LETTER_QUEUES]
            return await dlq.read(store, queues, Selection(),
                                  self.settings.operator.dlq_read_limit)
        letters = await self._reading(read)
        return [dl for dl in letters if str(saga_id) in dl.body.decode(errors="replace")]

    # --- the broker connection ---------------------------------------------------------------
    async def _connection(self) -> AbstractConnection:
        try:
            return await self.broker.get()
        except CONNECT_ERRORS as exc:
            raise DependencyUnavailable(f"RabbitMQ is unreachable: {exc}") from exc

    async def _reading(self, read: Callable[[AmqpDeadLetterStore], Awaitable[T]]) -> T:
        """``read`` on the kept connection. If the connection turns out lost (the broker
        restarted, a node went away), it is opened again and ``read`` done once more:
        reading moves nothing (what it held, the broker requeued), so twice is harmless."""
        for attempt in (1, 2):
            connection = await self._connection()
            try:
                async with AmqpDeadLetterStore(self.settings, connection=connection) as store:
                    return await read(store)
            except CONNECT_ERRORS as exc:
                if not connection_lost(connection):
                    raise
                if attempt == 2:
                    raise DependencyUnavailable(f"lost the RabbitMQ connection: {exc}") from exc
        raise AssertionError("unreachable")

    # --- audit -------------------------------------------------------------------------------
    async def audit_entries(self, filters: AuditFilter) -> list[AuditEntry]:
        return await audit.list_entries(self.auditdb, filters)


async def _resolve(store: AmqpDeadLetterStore, names: list[str] | None) -> list[QueueInfo]:
    """The dead-letter queues asked for; a name that is not one is a 422 page, not a bug.
    (One management API call per page, by its blocking client: off the event loop.)"""
    try:
        return await asyncio.to_thread(dlq.resolve_queues, store, names)
    except dlq.UsageError as exc:
        raise ValidationFailed(str(exc)) from exc
