"""The profiles worker: ``user.registered`` -> a profile in apidb + ``profile.created``;
and the profile steps of the deletion saga: ``profile.delete`` archives the profile (a
soft delete, so that ``profile.restore`` can bring it back), each answered with a reply.

Idempotent twice over: the runtime records the message id in the inbox in the same
transaction, and the insert itself does nothing when the profile already exists (a
replay from a fresh inbox, or a duplicate event with another id), in which case no second
``profile.created`` is emitted either.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from functools import partial

from sqlalchemy.ext.asyncio import AsyncSession

from apps.users.cache import ProfileCache, RedisProfileCache
from apps.users.services import (
    archive_profile,
    create_profile,
    create_profiles,
    restore_profile,
)
from shared.config import Settings
from shared.events import (
    DeleteProfile,
    ProfileCreated,
    ProfileDeleted,
    ProfileRestored,
    RestoreProfile,
    UserRegistered,
)
from shared.logging import get_logger
from shared.redis_client import create_redis
from shared.topology import consumer_spec
from workers.runtime.consumer import Consumer
from workers.runtime.context import MessageContext, emit_each
from workers.runtime.sessions import Batched

log = get_logger(__name__)


async def handle_user_registered(
    session: AsyncSession, message: UserRegistered, ctx: MessageContext
) -> None:
    """Create the user's profile once and announce it."""
    if not await create_profile(session, message.user_id, message.email, message.display_name):
        log.info("profile.already_exists", user_id=str(message.user_id))
        return
    await ctx.emit(
        session, ProfileCreated(user_id=message.user_id, display_name=message.display_name)
    )
    log.info("profile.created", user_id=str(message.user_id))


async def handle_users_registered(
    session: AsyncSession, items: Sequence[tuple[UserRegistered, MessageContext]]
) -> None:
    """:func:`handle_user_registered` for the messages of a batch: their profiles in one
    statement, and one ``profile.created`` for each profile created, in one more."""
    created = await create_profiles(
        session, [(m.user_id, m.email, m.display_name) for m, _ in items]
    )
    announced: list[tuple[MessageContext, ProfileCreated]] = []
    for message, ctx in items:
        if message.user_id not in created:
            _log_profile("profile.already_exists", message, ctx)
            continue
        created.discard(message.user_id)  # the same user twice: the first one created it
        event = ProfileCreated(user_id=message.user_id, display_name=message.display_name)
        announced.append((ctx, event))
    await emit_each(session, announced)
    for ctx, event in announced:
        _log_profile("profile.created", event, ctx)


def _log_profile(what: str, message: UserRegistered | ProfileCreated, ctx: MessageContext) -> None:
    log.info(what, user_id=str(message.user_id), **ctx.log_keys)  # nothing bound in a batch


async def handle_delete_profile(
    session: AsyncSession,
    message: DeleteProfile,
    ctx: MessageContext,
    cache: ProfileCache | None = None,
) -> None:
    """Archive the profile and reply ``profile.deleted``; archiving twice changes nothing.

    A command past its deadline is refused silently: the orchestrator has stopped
    waiting and sends ``profile.restore`` instead (which is harmless on a live profile).
    A user without a profile has nothing to archive, which is a success.
    """
    if message.deadline is not None and message.deadline < datetime.now(UTC):
        log.warning("profile.delete_expired", saga_id=str(message.saga_id))
        return
    changed = await archive_profile(session, message.user_id, message.saga_id)
    log.info("profile.archived", user_id=str(message.user_id), changed=changed)
    if cache is not None:
        await cache.evict(message.user_id)
    await ctx.emit(session, ProfileDeleted(saga_id=message.saga_id, user_id=message.user_id))


async def handle_restore_profile(
    session: AsyncSession,
    message: RestoreProfile,
    ctx: MessageContext,
    cache: ProfileCache | None = None,
) -> None:
    """Un-archive the profile and reply ``profile.restored``; idempotent.

    A profile locked by someone else, or missing, fails the attempt (retried with backoff
    by the runtime, dead-lettered when the attempts are exhausted).
    """
    changed = await restore_profile(session, message.user_id)
    log.info("profile.restored", user_id=str(message.user_id), changed=changed)
    if cache is not None:
        await cache.evict(message.user_id)
    await ctx.emit(session, ProfileRestored(saga_id=message.saga_id, user_id=message.user_id))


def consumer(settings: Settings) -> Consumer:
    """The ``profiles`` consumer (apidb); it evicts archived/restored profiles from the
    users API's cache, so the API stops (or starts again) showing them at once."""
    redis = create_redis(settings.redis.url)
    cache = RedisProfileCache(
        redis,
        prefix=settings.redis.key_prefix,
        ttl_s=settings.profiles.cache_ttl_s,
    )
    return Consumer(
        consumer_spec("profiles"),
        {
            UserRegistered: Batched(handle_user_registered, handle_users_registered),
            DeleteProfile: partial(handle_delete_profile, cache=cache),
            RestoreProfile: partial(handle_restore_profile, cache=cache),
        },
        on_stop=(redis.aclose,),
    )


__all__ = [
    "consumer",
    "handle_delete_profile",
    "handle_restore_profile",
    "handle_user_registered",
    "handle_users_registered",
]
