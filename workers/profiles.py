"""The profiles worker: ``user.registered`` -> a profile in apidb + ``profile.created``.

Idempotent twice over: the runtime records the message id in the inbox in the same
transaction, and the insert itself does nothing when the profile already exists (a
replay from a fresh inbox, or a duplicate event with another id), in which case no second
``profile.created`` is emitted either.
"""

from __future__ import annotations

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from apps.users.models import profiles
from shared.config import Settings
from shared.events import ProfileCreated, UserRegistered
from shared.logging import get_logger
from workers.context import MessageContext
from workers.runtime import Consumer

log = get_logger(__name__)


async def handle_user_registered(
    session: AsyncSession, message: UserRegistered, ctx: MessageContext
) -> None:
    """Create the user's profile once and announce it."""
    created = await session.execute(
        insert(profiles)
        .values(user_id=message.user_id, email=message.email, display_name=message.display_name)
        .on_conflict_do_nothing(index_elements=[profiles.c.user_id])
        .returning(profiles.c.user_id)
    )
    if created.first() is None:
        log.info("profile.already_exists", user_id=str(message.user_id))
        return
    await ctx.emit(
        session, ProfileCreated(user_id=message.user_id, display_name=message.display_name)
    )
    log.info("profile.created", user_id=str(message.user_id))


def consumer(_: Settings) -> Consumer:
    """The ``profiles`` consumer (apidb)."""
    return Consumer(
        name="profiles", database="apidb", handlers={UserRegistered: handle_user_registered}
    )


__all__ = ["consumer", "handle_user_registered"]
