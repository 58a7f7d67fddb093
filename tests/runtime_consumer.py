"""A test-only consumer for the runtime tests: its effect is one row in ``rt_effects``.

What the handler does depends on the ``email`` of the :class:`UserRegistered` it gets:
``ok…`` records the effect; ``transient-once…`` fails transiently on its first attempt;
``transient-always…`` always fails transiently; ``domain…`` breaks a business rule;
``block60…`` blocks a thread for 60 s (off the event loop) first; ``slow…`` takes 2 s;
``commits…`` breaks the handler contract by committing its effect itself.
Run as a script (``python -m tests.runtime_consumer NAME [--hang-before-ack]``) it is the
subprocess the kill -9 and SIGTERM tests use; settings come from the environment.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from shared import messaging as m
from shared.config import Settings
from shared.errors import TransientError, ValidationFailed
from shared.events import UserRegistered, encode
from shared.logging import configure_logging
from shared.topology import ConsumerSpec
from workers.runtime import acks
from workers.runtime.consumer import Consumer
from workers.runtime.context import MessageContext
from workers.runtime.sessions import Batched

DATABASE = "apidb"
EFFECTS_DDL = """
CREATE TABLE IF NOT EXISTS rt_effects (
    id bigserial PRIMARY KEY,
    consumer text NOT NULL,
    message_id text NOT NULL,
    user_id uuid NOT NULL,
    email text NOT NULL,
    attempts int NOT NULL,
    correlation_id text,
    handled_at timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""


async def record_user(session: AsyncSession, message: UserRegistered, ctx: MessageContext) -> None:
    """The test effect: one row per handled message, after the behaviour its email asks for."""
    email = message.email
    if email.startswith("transient-once") and ctx.attempts == 0:
        raise TransientError("dependency hiccup")
    if email.startswith("transient-always"):
        raise TransientError("dependency is down for good")
    if email.startswith("domain"):
        raise ValidationFailed("display name is not allowed")
    if email.startswith("block60"):
        await ctx.run_blocking(time.sleep, 60)
    if email.startswith("slow"):
        await ctx.run_blocking(time.sleep, 2)
    await session.execute(
        text(
            "INSERT INTO rt_effects"
            " (consumer, message_id, user_id, email, attempts, correlation_id)"
            " VALUES (:c, :m, :u, :e, :a, :k)"
        ),
        {"c": ctx.consumer, "m": ctx.message_id, "u": message.user_id, "e": email,
         "a": ctx.attempts, "k": ctx.correlation_id},
    )
    if email.startswith("commits"):
        await session.commit()


_RECORD_MANY = text(
    "INSERT INTO rt_effects (consumer, message_id, user_id, email, attempts, correlation_id)"
    " SELECT * FROM unnest(CAST(:c AS text[]), CAST(:m AS text[]), CAST(:u AS uuid[]),"
    " CAST(:e AS text[]), CAST(:a AS int[]), CAST(:k AS text[]))"
)

BATCH_SIZES: list[int] = []
"""How many messages each call of :func:`record_users` got (in this process)."""


async def record_users(
    session: AsyncSession, items: Sequence[tuple[UserRegistered, MessageContext]]
) -> None:
    """The batch form of :func:`record_user`: a message that asks to fail fails the batch
    (its messages then run one by one through ``record_user``); the rest in one statement."""
    BATCH_SIZES.append(len(items))
    for message, ctx in items:
        if not message.email.startswith("ok"):
            await record_user(session, message, ctx)  # the same failure, or the same row
    ok = [(message, ctx) for message, ctx in items if message.email.startswith("ok")]
    await session.execute(_RECORD_MANY, {
        "c": [ctx.consumer for _, ctx in ok], "m": [ctx.message_id for _, ctx in ok],
        "u": [message.user_id for message, _ in ok], "e": [message.email for message, _ in ok],
        "a": [ctx.attempts for _, ctx in ok], "k": [ctx.correlation_id for _, ctx in ok],
    })


def build_consumer(
    name: str, *, prefetch: int | None = None, batch_max: int | None = None,
    partitions: int | None = None, batched: bool = False,
) -> Consumer:
    """The test consumer; ``batched``: its handler has a batch form (:func:`record_users`)."""
    spec = ConsumerSpec(name, DATABASE, (UserRegistered.event_type,))
    handler = Batched(record_user, record_users) if batched else record_user
    return Consumer(
        spec, {UserRegistered: handler}, prefetch=prefetch, batch_max=batch_max,
        partitions=partitions,
    )


def user_message(
    email: str = "ok@example.com",
    *,
    user_id: uuid.UUID | None = None,
    message_id: str | None = None,
) -> aio_pika.Message:
    """A ``user.registered`` message exactly as the relay publishes it."""
    event = UserRegistered(user_id=user_id or uuid.uuid4(), email=email)
    correlation = str(uuid.uuid4())
    return aio_pika.Message(
        body=encode(event),
        message_id=message_id or str(uuid.uuid4()),
        type=event.event_type,
        content_type=m.CONTENT_TYPE,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        timestamp=datetime.now(UTC).replace(microsecond=0),
        correlation_id=correlation,
        app_id="authdb",
        headers={
            m.H_CORRELATION_ID: correlation,
            m.H_AGGREGATE_TYPE: event.aggregate_type,
            m.H_AGGREGATE_ID: event.aggregate_id,
            m.H_AGGREGATE_SLOT: m.aggregate_slot(event.aggregate_id),
            m.H_SCHEMA_VERSION: event.schema_version,
            m.H_PRODUCER: "authdb",
        },
    )


def _hang_before_ack(marker: Path) -> None:
    """Make the process stop for good right after the commit, before the ack goes out."""

    async def hang(message: object, **_: object) -> None:
        marker.write_text("committed")
        await asyncio.Event().wait()

    acks.ack = hang  # test-only fault injection


async def _main(name: str, hang_marker: Path | None) -> None:
    settings = Settings.from_env()
    configure_logging(settings.observability, service=f"test-{name}")
    if hang_marker is not None:
        _hang_before_ack(hang_marker)
    await build_consumer(name).run(settings)


if __name__ == "__main__":
    marker = os.environ.get("RT_HANG_MARKER")
    asyncio.run(_main(sys.argv[1], Path(marker) if marker else None))
