"""The RabbitMQ topology as data: exchanges, queues and bindings as value objects.

Code refers to names from here only. ``infra/rabbitmq/definitions.json`` is generated
from these objects (``amsctl topology export``) and a test keeps the two in step;
``amsctl topology apply`` declares the same objects on a running broker, idempotently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shared.messaging import EVENTS_EXCHANGE


@dataclass(frozen=True)
class Exchange:
    name: str
    type: str = "topic"
    durable: bool = True
    internal: bool = False
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Queue:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    durable: bool = True


@dataclass(frozen=True)
class Binding:
    exchange: str
    queue: str
    routing_key: str


EVENTS = Exchange(EVENTS_EXCHANGE)
"""Every event and saga command goes through this durable topic exchange."""

EXCHANGES: tuple[Exchange, ...] = (EVENTS,)
QUEUES: tuple[Queue, ...] = ()
BINDINGS: tuple[Binding, ...] = ()
