"""The inbox: which messages a consumer has applied, in the same transaction as the effect."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

# ON CONFLICT DO NOTHING waits for a concurrent transaction holding the same key: if that
# one commits, this one sees the conflict (a duplicate); if it rolls back, this one wins.
_CLAIM = text(
    """
    INSERT INTO inbox (consumer, message_id, event_type)
    VALUES (:consumer, :message_id, :event_type)
    ON CONFLICT DO NOTHING
    RETURNING 1
    """
)


async def claim(session: AsyncSession, *, consumer: str, message_id: str, event_type: str) -> bool:
    """Record ``message_id`` for ``consumer``; False if it was applied before (a duplicate)."""
    result = await session.execute(
        _CLAIM, {"consumer": consumer, "message_id": message_id, "event_type": event_type}
    )
    return result.scalar_one_or_none() is not None


_SEEN = text("SELECT 1 FROM inbox WHERE consumer = :consumer AND message_id = :message_id")


async def seen(session: AsyncSession, *, consumer: str, message_id: str) -> bool:
    """True if ``message_id`` was applied already (a cheap check before doing the work)."""
    result = await session.execute(_SEEN, {"consumer": consumer, "message_id": message_id})
    return result.scalar_one_or_none() is not None


_CLAIM_MANY = text(
    """
    INSERT INTO inbox (consumer, message_id, event_type)
    SELECT :consumer, ids.message_id, ids.event_type
    FROM unnest(CAST(:message_ids AS text[]), CAST(:event_types AS text[]))
         AS ids(message_id, event_type)
    ON CONFLICT DO NOTHING
    RETURNING message_id
    """
)


async def claim_many(
    session: AsyncSession, *, consumer: str, messages: list[tuple[str, str]]
) -> set[str]:
    """Record several ``(message_id, event_type)`` at once; returns the ids new to the inbox."""
    result = await session.execute(_CLAIM_MANY, {
        "consumer": consumer,
        "message_ids": [message_id for message_id, _ in messages],
        "event_types": [event_type for _, event_type in messages],
    })
    return {str(row) for row in result.scalars()}
