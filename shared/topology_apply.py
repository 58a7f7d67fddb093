"""Apply :mod:`shared.topology` to a running broker."""

from __future__ import annotations

import aio_pika

from shared import topology
from shared.broker import declare_topology
from shared.config import Settings


async def apply_topology(settings: Settings) -> str:
    """Declare exchanges, queues and bindings; returns a one-line summary."""
    connection = await aio_pika.connect(settings.rabbitmq_url)
    try:
        channel = await connection.channel()
        await declare_topology(channel)
    finally:
        await connection.close()
    return (
        f"declared {len(topology.EXCHANGES)} exchange(s), {len(topology.QUEUES)} queue(s), "
        f"{len(topology.BINDINGS)} binding(s)"
    )
