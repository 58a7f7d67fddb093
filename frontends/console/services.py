"""What the console does as an operator tool, on the same code as ``amsctl``.

Dead letters go through :mod:`amsctl.dlq.service` (the CLI's guarantees: confirm before
removal, back to the queue it failed in), the outbox through :mod:`amsctl.outbox`, sagas
through :mod:`apps.auth.sagas`, the audit trail through :mod:`apps.auth.audit`. Every change
opens the audit trail first (:func:`amsctl.audit.trail`: no audit table, no action) and is
recorded under the signed-in admin's identity with source ``console``.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from amsctl import outbox as outbox_ops
from amsctl.audit import trail
from amsctl.dlq import service as dlq
from amsctl.dlq.broker import AmqpDeadLetterStore, QueueInfo
from amsctl.dlq.model import DeadLetter, Selection
from apps.auth import audit, sagas
from apps.auth.audit import AuditEntry, AuditFilter, AuditSource
from apps.auth.schemas import Saga
from shared.config import DATABASES, Settings
from shared.errors import NotFound, ValidationFailed


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

    # --- dead letters ------------------------------------------------------------------------
    async def dead_letters(self, selection: Selection, queue: str | None = None
                           ) -> list[DeadLetter]:
        async with AmqpDeadLetterStore(self.settings) as store:
            queues = await _resolve(store, [queue] if queue else None)
            return await dlq.read(store, queues, selection, self.settings.operator.dlq_read_limit)

    async def overview(self, selection: Selection, queue: str | None
                       ) -> tuple[list[QueueInfo], list[DeadLetter]]:
        """Every dead-letter queue and the selected letters (of one queue, if it is one of
        them), on one broker connection."""
        async with AmqpDeadLetterStore(self.settings) as store:
            queues = await _resolve(store, None)
            chosen = [q for q in queues if q.name == queue] or queues
            limit = self.settings.operator.dlq_read_limit
            letters = await dlq.read(store, chosen, selection, limit)
        return queues, letters

    async def dead_letter(self, message_id: str) -> tuple[DeadLetter, list[dict[str, object]]]:
        """One dead letter in full and its replay/purge history. The history is a scan of
        the whole audit log file (it only grows): read in a thread, off the event loop."""
        found = await self.dead_letters(Selection(message_ids=frozenset({message_id})))
        if not found:
            raise NotFound(f"no dead letter with message id {message_id}")
        return found[0], await asyncio.to_thread(dlq.history, self.settings, message_id)

    async def preview(self, request: dlq.MoveRequest) -> ReplayPlan:
        async with AmqpDeadLetterStore(self.settings) as store:
            queues = await _resolve(store, request.queues)
            limit = self.settings.operator.dlq_read_limit
            letters = await dlq.preview(store, queues, request, limit)
        return ReplayPlan(request.action, letters, request)

    async def move(self, admin: Admin, request: dlq.MoveRequest) -> dlq.MoveResult:
        """Replay or purge exactly as ``amsctl dlq`` does, audited under the admin's name."""
        async with AmqpDeadLetterStore(self.settings) as store:
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
        letters = await self.dead_letters(Selection())
        return [dl for dl in letters if str(saga_id) in dl.body.decode(errors="replace")]

    # --- audit -------------------------------------------------------------------------------
    async def audit_entries(self, filters: AuditFilter) -> list[AuditEntry]:
        return await audit.list_entries(self.auditdb, filters)


async def _resolve(store: AmqpDeadLetterStore, names: list[str] | None) -> list[QueueInfo]:
    """The dead-letter queues asked for; a name that is not one is a 422 page, not a bug.
    (The queue list comes from the management API's blocking client: off the event loop.)"""
    try:
        return await asyncio.to_thread(dlq.resolve_queues, store, names)
    except dlq.UsageError as exc:
        raise ValidationFailed(str(exc)) from exc
