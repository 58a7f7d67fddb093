"""The profiles handler with a real AsyncSession on apidb: effect, follow-up, idempotence."""

from __future__ import annotations

import uuid

import sqlalchemy as sa

from shared.config import Settings
from shared.db import create_engine, session_factory
from shared.events import UserRegistered
from workers.profiles import handle_user_registered
from workers.runtime.context import MessageContext


def context(message_id: str) -> MessageContext:
    return MessageContext(
        message_id=message_id,
        event_type="user.registered",
        correlation_id="corr-w",
        causation_id=None,
        headers={},
        redelivered=False,
        attempts=0,
        consumer="profiles",
    )


async def test_creates_profile_once_and_emits_profile_created_once(settings: Settings) -> None:
    engine = create_engine(settings.users_database_url)
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
