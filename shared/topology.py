"""The RabbitMQ topology as data: exchanges, queues, bindings and policies as value objects.

Code refers to names from here only. ``infra/rabbitmq/definitions.json`` is generated
from these objects (``amsctl topology export``) and a test keeps the two in step;
``amsctl topology apply`` declares the same objects on a running broker, idempotently.

Every consumer of the product is one :class:`ConsumerSpec` in :data:`CONSUMERS`; its
queues are derived from it:

``<consumer>`` (work queue, quorum)
    Bound to the consumer's routing keys on ``events``. The broker dead-letters to
    ``<consumer>.dlq`` only when the delivery limit is hit: the backstop against a
    message that crashes its consumer before it can even be nacked. Every other failure
    is dead-lettered by the consumer runtime itself, with the reason attached.
``<consumer>.retry.<delay>`` (quorum, no consumers)
    A message waits there for ``<delay>`` (queue TTL) and is then dead-lettered through
    the default exchange back to ``<consumer>`` only, never to the other subscribers of
    its routing key. At-least-once dead-lettering, so a retry survives a broker crash.
``<consumer>.dlq`` (classic, durable)
    Parked messages for the operator. Classic on purpose: ``amsctl dlq`` reads it with
    get-without-ack + requeue, and a classic queue puts a requeued message back in its
    place with no delivery count. A quorum queue would count every inspection as a
    delivery, and RabbitMQ 4.x gives quorum queues a default delivery limit of 20: twenty
    looks at a dead letter would drop it. So a dead-letter queue has no delivery limit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from shared import events
from shared.messaging import EVENTS_EXCHANGE

DELIVERY_LIMIT = 20
"""Deliveries of one message to a work queue before the broker dead-letters it (crash loops).

High enough that a few broker or network outages, which return every unacknowledged
message to the queue, never dead-letter a healthy message."""

DEFAULT_RETRY_DELAYS = "1s,5s,30s,2m"
"""Retry delays the committed definitions.json is generated with (``WORKER_RETRY_DELAYS``)."""


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


@dataclass(frozen=True)
class Policy:
    """A management policy; RabbitMQ recommends policies for DLX and limits (changeable live)."""

    name: str
    pattern: str
    definition: dict[str, Any]
    apply_to: str = "queues"
    priority: int = 0


_DELAY = re.compile(r"^\s*(\d+)\s*(ms|s|m|h)\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}


@dataclass(frozen=True)
class RetryDelay:
    """One retry step: ``label`` names the queue (``5s``), ``milliseconds`` is its TTL."""

    label: str
    milliseconds: int

    @property
    def seconds(self) -> float:
        return self.milliseconds / 1000

    @classmethod
    def parse(cls, token: str) -> RetryDelay:
        match = _DELAY.match(token)
        if match is None or int(match.group(1)) <= 0:
            raise ValueError(f"invalid retry delay {token!r}; expected e.g. 500ms, 5s, 2m, 1h")
        amount, unit = int(match.group(1)), match.group(2)
        return cls(label=f"{amount}{unit}", milliseconds=amount * _UNIT_MS[unit])


def parse_retry_delays(text: str) -> tuple[RetryDelay, ...]:
    """``"1s,5s,30s"`` -> the retry steps, in order; at least one."""
    delays = tuple(RetryDelay.parse(token) for token in text.split(",") if token.strip())
    if not delays:
        raise ValueError("at least one retry delay is required")
    return delays


@dataclass(frozen=True)
class ConsumerSpec:
    """One consumer: its name (= work queue), its database and the routing keys it handles."""

    name: str
    database: str
    routing_keys: tuple[str, ...]

    @property
    def queue_name(self) -> str:
        return self.name

    @property
    def dlq_name(self) -> str:
        return f"{self.name}.dlq"

    def retry_queue_name(self, delay: RetryDelay) -> str:
        return f"{self.name}.retry.{delay.label}"

    def work_queue(self) -> Queue:
        return Queue(self.queue_name, arguments={
            "x-queue-type": "quorum",
            "x-delivery-limit": DELIVERY_LIMIT,
            **_dead_letter_to(self.dlq_name),
        })

    def dead_letter_queue(self) -> Queue:
        return Queue(self.dlq_name, arguments={"x-queue-type": "classic"})

    def retry_queue(self, delay: RetryDelay) -> Queue:
        return Queue(self.retry_queue_name(delay), arguments={
            "x-queue-type": "quorum",
            "x-message-ttl": delay.milliseconds,
            **_dead_letter_to(self.queue_name),
        })

    def queues(self, delays: tuple[RetryDelay, ...]) -> tuple[Queue, ...]:
        retry = tuple(self.retry_queue(d) for d in dict.fromkeys(delays))
        return (self.work_queue(), *retry, self.dead_letter_queue())

    def bindings(self) -> tuple[Binding, ...]:
        return tuple(Binding(EVENTS_EXCHANGE, self.queue_name, key) for key in self.routing_keys)

    def policy(self) -> Policy:
        """The work queue's limits as a policy, so an operator can tune them on a live queue."""
        definition = {
            "delivery-limit": DELIVERY_LIMIT,
            "dead-letter-exchange": "",
            "dead-letter-routing-key": self.dlq_name,
            "dead-letter-strategy": "at-least-once",
            "overflow": "reject-publish",
        }
        return Policy(f"ams-{self.name}", f"^{re.escape(self.name)}$", definition)


def _dead_letter_to(queue: str) -> dict[str, Any]:
    # Via the default exchange: the dead letter reaches exactly this queue. At-least-once
    # dead-lettering (quorum only) needs reject-publish overflow.
    return {
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": queue,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


CONSUMERS: tuple[ConsumerSpec, ...] = (
    ConsumerSpec("profiles", "apidb", (
        events.UserRegistered.event_type,
        events.DeleteProfile.event_type,
        events.RestoreProfile.event_type,
    )),
    ConsumerSpec("ocr", "admindb", (events.DocumentUploaded.event_type,)),
    ConsumerSpec("documents", "admindb", (events.DeleteDocuments.event_type,)),
    ConsumerSpec("saga", "authdb", (
        events.UserDeletionRequested.event_type,
        events.ProfileDeleted.event_type,
        events.DocumentsDeleted.event_type,
        events.DocumentsDeletionFailed.event_type,
        events.ProfileRestored.event_type,
    )),
)
"""Every consumer of the product; ``python -m workers <name>`` runs one."""


UNCONSUMED_EVENTS: frozenset[str] = frozenset(
    {cls.event_type for cls in events.CATALOGUE.values()}
    - {key for spec in CONSUMERS for key in spec.routing_keys}
)
"""Catalogue events no consumer of the product handles (``profile.created``,
``document.ocr_completed`` …: notifications for audit or read models). The relay publishes
them without ``mandatory``: no queue bound is expected, not a failure to retry and park."""


def consumer_spec(name: str) -> ConsumerSpec:
    for spec in CONSUMERS:
        if spec.name == name:
            return spec
    raise KeyError(f"unknown consumer {name!r}")


EVENTS = Exchange(EVENTS_EXCHANGE)
"""Every event and saga command goes through this durable topic exchange."""

EXCHANGES: tuple[Exchange, ...] = (EVENTS,)
_DELAYS = parse_retry_delays(DEFAULT_RETRY_DELAYS)
QUEUES: tuple[Queue, ...] = tuple(q for spec in CONSUMERS for q in spec.queues(_DELAYS))
BINDINGS: tuple[Binding, ...] = tuple(b for spec in CONSUMERS for b in spec.bindings())
POLICIES: tuple[Policy, ...] = tuple(spec.policy() for spec in CONSUMERS)


def queues_for(delays: tuple[RetryDelay, ...]) -> tuple[Queue, ...]:
    """Every queue with the given retry delays (a deployment may configure its own)."""
    return tuple(q for spec in CONSUMERS for q in spec.queues(delays))
