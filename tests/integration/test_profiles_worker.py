"""The profiles handler with a real AsyncSession on apidb: effect, follow-up, idempotence."""

from __future__ import annotations

import uuid

import sqlalchemy as sa

from shared.config import Settings
from shared.db import create_engine, session_factory
from shared.events import UserRegistered
from shared.tracing import TraceHeaders
from workers.profiles import handle_user_registered, handle_users_registered
from workers.runtime.context import MessageContext


def context(
    message_id: str, correlation_id: str = "corr-w", trace: TraceHeaders | None = None
) -> MessageContext:
    return MessageContext(
        message_id=message_id,
        event_type="user.registered",
        correlation_id=correlation_id,
        causation_id=None,
        headers={},
        redelivered=False,
        attempts=0,
        consumer="profiles",
        trace=trace,
    )


async def test_creates_profile_once_and_emits_profile_created_once(settings: Settings) -> None:
    engine = create_engine(settings.database.users_url)
    sessions = session_factory(engine)
    user_id = uuid.uuid4()
    event = UserRegistered(user_id=user_id, email="w@example.com", display_name="Wendy")
    try:
        for message_id in ("m1", "m2"):  # a duplicate with another id: still one effect
            # The follow-up's correlation id comes from the context, passed explicitly.
            async with sessions() as session, session.begin():
                await handle_user_registered(session, event, context(message_id))
        async with engine.connect() as conn:
            profile = (
                await conn.execute(
                    sa.text("SELECT email, display_name FROM profiles WHERE user_id = :u"),
                    {"u": user_id},
                )
            ).one()
            follow_ups = (
                await conn.execute(
                    sa.text(
                        "SELECT event_type, correlation_id, headers FROM outbox "
                        "WHERE aggregate_id = :u"
                    ),
                    {"u": str(user_id)},
                )
            ).all()
    finally:
        await engine.dispose()
    assert tuple(profile) == ("w@example.com", "Wendy")
    assert len(follow_ups) == 1
    assert follow_ups[0].event_type == "profile.created"
    assert follow_ups[0].correlation_id == "corr-w"
    assert follow_ups[0].headers["x-causation-id"] == "m1"


def _traceparent(n: int) -> str:
    return f"00-{n:032x}-{n:016x}-01"


async def test_a_batch_creates_the_same_profiles_and_follow_ups_as_one_by_one(
    settings: Settings,
) -> None:
    """The batch form: each new user's profile and one ``profile.created`` carrying its own
    message's correlation, causation and trace context; an existing profile and a second
    message for the same user change nothing, as with the one-by-one handler."""
    engine = create_engine(settings.database.users_url)
    sessions = session_factory(engine)
    existing, *new = [uuid.uuid4() for _ in range(4)]
    async with sessions() as session, session.begin():
        await handle_user_registered(
            session, UserRegistered(user_id=existing, email="e@example.com"), context("b0")
        )
    users = [existing, *new, new[0]]  # the last one: the same user again, another message
    items = [
        (
            UserRegistered(user_id=user, email=f"b{i}@example.com", display_name=f"B{i}"),
            context(f"b{i + 1}", f"corr-b{i + 1}", (_traceparent(i + 1), f"k=v{i + 1}")),
        )
        for i, user in enumerate(users)
    ]
    try:
        async with sessions() as session, session.begin():
            await handle_users_registered(session, items)
        async with engine.connect() as conn:
            profiles = dict((await conn.execute(
                sa.text("SELECT user_id, email FROM profiles WHERE user_id = ANY(:u)"),
                {"u": users},
            )).all())
            follow_ups = (await conn.execute(
                sa.text(
                    "SELECT aggregate_id, correlation_id, headers, traceparent, tracestate "
                    "FROM outbox WHERE aggregate_id = ANY(:u) AND event_type = 'profile.created' "
                    "ORDER BY id"
                ),
                {"u": [str(user) for user in users]},
            )).all()
    finally:
        await engine.dispose()
    assert profiles == {
        existing: "e@example.com", new[0]: "b1@example.com", new[1]: "b2@example.com",
        new[2]: "b3@example.com",
    }
    assert [tuple(row) for row in follow_ups] == [
        (str(existing), "corr-w", {"x-causation-id": "b0"}, None, None),
        *[
            (str(user), f"corr-b{i}", {"x-causation-id": f"b{i}"}, _traceparent(i), f"k=v{i}")
            for i, user in enumerate(new, start=2)
        ],
    ]
