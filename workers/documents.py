"""The documents worker: the ``documents.delete`` step of the deletion saga (admindb).

Deletes every document of the user (:func:`apps.admin.services.delete_user_documents`)
and replies ``documents.deleted``. A document under legal hold is a business outcome,
not a failure of the worker: it is answered with ``documents.deletion_failed`` (the
orchestrator then compensates), never dead-lettered. A command past its deadline is
refused the same way, because the orchestrator has already stopped waiting for it.
Idempotent: deleting again finds nothing and answers ``documents.deleted`` with count 0.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from apps.admin.services import delete_user_documents
from shared.config import Settings
from shared.errors import LegalHold
from shared.events import DeleteDocuments, DocumentsDeleted, DocumentsDeletionFailed
from shared.logging import get_logger
from shared.topology import consumer_spec
from workers.runtime.consumer import Consumer
from workers.runtime.context import MessageContext

log = get_logger(__name__)


async def handle_delete_documents(
    session: AsyncSession, message: DeleteDocuments, ctx: MessageContext
) -> None:
    """Delete the user's documents, or explain why not; always reply."""
    saga_id, user_id = message.saga_id, message.user_id
    if message.deadline is not None and message.deadline < datetime.now(UTC):
        reason = f"command expired at {message.deadline.isoformat()}"
        log.warning("documents.delete_expired", saga_id=str(saga_id))
        await ctx.emit(
            session, DocumentsDeletionFailed(saga_id=saga_id, user_id=user_id, reason=reason)
        )
        return
    try:
        count = await delete_user_documents(session, user_id)
    except LegalHold as exc:
        log.info("documents.legal_hold", saga_id=str(saga_id), user_id=str(user_id))
        await ctx.emit(
            session, DocumentsDeletionFailed(saga_id=saga_id, user_id=user_id, reason=str(exc))
        )
        return
    log.info("documents.deleted", saga_id=str(saga_id), user_id=str(user_id), count=count)
    await ctx.emit(session, DocumentsDeleted(saga_id=saga_id, user_id=user_id, count=count))


def consumer(_: Settings) -> Consumer:
    """The ``documents`` consumer (admindb)."""
    return Consumer(consumer_spec("documents"), {DeleteDocuments: handle_delete_documents})


__all__ = ["consumer", "handle_delete_documents"]
