"""``python -m outbox [--database authdb ...]``: run the relay (all three databases by default).

SIGTERM or SIGINT stops claiming, waits for in-flight confirms, and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from prometheus_client import start_http_server

from outbox.leases import LeaseConnection
from outbox.publisher import AmqpPublisher
from outbox.relay import Relay
from outbox.store import PgOutboxQueue
from shared import eventloop
from shared.config import DATABASES, Settings, settings_or_exit
from shared.db import asyncpg_dsn
from shared.logging import configure_logging, get_logger
from shared.tracing import configure_tracing, instrument_asyncpg

log = get_logger("outbox")


def build_relay(settings: Settings, database: str) -> Relay:
    """The relay of one database, on PostgreSQL and RabbitMQ (the composition root)."""
    dsn = asyncpg_dsn(settings.database.url(database))
    leases = LeaseConnection(dsn)
    return Relay(
        database=database,
        queue=PgOutboxQueue(dsn, leases),
        leases=leases,
        publisher=AmqpPublisher(settings.broker.url, producer=database),
        settings=settings.relay,
        trace=settings.observability.debug,
    )


def build_relays(settings: Settings, databases: tuple[str, ...]) -> list[Relay]:
    return [build_relay(settings, db) for db in databases]


async def serve(settings: Settings, databases: tuple[str, ...]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    relays = build_relays(settings, databases)
    log.info("relay_starting", databases=list(databases))
    await asyncio.gather(*(relay.run(stop) for relay in relays))
    log.info("relay_stopped")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m outbox", description=__doc__)
    parser.add_argument(
        "--database",
        "-d",
        action="append",
        choices=DATABASES,
        help="database whose outbox to relay (repeatable; default: all three)",
    )
    args = parser.parse_args(argv)
    settings = settings_or_exit("outbox-relay")
    configure_logging(settings.observability, service="outbox-relay")
    configure_tracing(settings.observability, service="outbox-relay")
    instrument_asyncpg()  # the relay's own connections are plain asyncpg
    if settings.relay.metrics_port:
        start_http_server(settings.relay.metrics_port)
    eventloop.run(serve(settings, tuple(args.database or DATABASES)))


if __name__ == "__main__":
    main()
