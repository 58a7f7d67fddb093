"""A deliberately small stand-in for the outbox relay, for end-to-end tests and the bench
until ``python -m outbox`` exists on this branch. It is not the product's relay: one copy,
no partitions, no parking. It does keep the contract of docs/CONTRACTS.md (properties and
headers) and the one guarantee the tests rely on: a row is deleted only after the broker
confirmed it. Wake-ups come from LISTEN/NOTIFY with a short polling fallback.

``python -m tests.relay_standin authdb apidb``
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from typing import Any

import aio_pika
import asyncpg

from outbox.schema import NOTIFY_CHANNEL
from shared import messaging as m
from shared.config import Settings
from shared.db import asyncpg_dsn

_CLAIM = """
SELECT id, event_id, event_type, routing_key, aggregate_type, aggregate_id, schema_version,
       payload::text AS payload, headers, correlation_id, created_at
FROM outbox WHERE parked_at IS NULL ORDER BY id LIMIT 200 FOR UPDATE SKIP LOCKED
"""


def _message(row: asyncpg.Record, database: str) -> aio_pika.Message:
    headers: dict[str, Any] = dict(json.loads(row["headers"]) if row["headers"] else {})
    headers.update(
        {
            m.H_CORRELATION_ID: row["correlation_id"] or "",
            m.H_AGGREGATE_TYPE: row["aggregate_type"],
            m.H_AGGREGATE_ID: row["aggregate_id"],
            m.H_SCHEMA_VERSION: row["schema_version"],
            m.H_PRODUCER: database,
        }
    )
    return aio_pika.Message(
        row["payload"].encode(),
        message_id=str(row["event_id"]),
        type=row["event_type"],
        content_type=m.CONTENT_TYPE,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        timestamp=row["created_at"],
        correlation_id=row["correlation_id"],
        app_id=database,
        headers=headers,
    )


async def relay(settings: Settings, database: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(settings.database_url(database)))
    listener = await asyncpg.connect(asyncpg_dsn(settings.database_url(database)))
    wake = asyncio.Event()
    await listener.add_listener(NOTIFY_CHANNEL, lambda *_: wake.set())
    amqp = await aio_pika.connect_robust(settings.rabbitmq_url)
    channel = await amqp.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(m.EVENTS_EXCHANGE)
    while True:
        async with conn.transaction():
            rows = await conn.fetch(_CLAIM)
            # Publish all, await every confirm, then delete: nothing lost on a crash.
            await asyncio.gather(
                *(
                    exchange.publish(_message(r, database), routing_key=r["routing_key"])
                    for r in rows
                )
            )
            if rows:
                await conn.execute("DELETE FROM outbox WHERE id = ANY($1)", [r["id"] for r in rows])
        if not rows:
            wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), 0.2)


async def main(databases: list[str]) -> None:
    settings = Settings.from_env()
    await asyncio.gather(*(relay(settings, db) for db in databases))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:] or ["authdb", "apidb"]))
