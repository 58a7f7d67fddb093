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
``<consumer>.p<i>`` (partitioned consumers, ``WORKER_PARTITIONS`` > 1)
    Instead of the one work queue: ``<consumer>.partitions``, a headers exchange, takes
    the consumer's routing keys from ``events`` and routes on the ``aggregate-slot``
    header the relay sets (CRC-32 of the aggregate id, 64 slots): slot ``s`` is bound to
    partition ``s mod N``, so every aggregate is in one partition, always the same one,
    also across broker restarts (plain bindings, no hash ring). A message without the
    header goes to partition 0 (alternate exchange ``<consumer>.unslotted``), never
    nowhere. One worker process consumes each partition (single active consumer: a
    second copy waits as a hot standby), so order per aggregate holds while the
    partitions run on several cores. Each partition has its own retry queues
    (``<consumer>.p<i>.retry.<delay>``, back to that partition only); the dead-letter
    queue is shared.
``replay`` (direct exchange)
    Each work queue (or partition) is bound to it with its own name as routing key: the one
    way back for a dead letter. The operator's broker user may publish here and nowhere else
    (:data:`OPERATOR_PERMISSIONS`), so even with its credentials nothing reaches a queue
    outside the topology, the ``events`` exchange or a retry queue.
``<consumer>.dlq`` (quorum, no delivery limit)
    Parked messages for the operator, replicated like everything else: a node lost is not
    the dead letters lost. ``amsctl dlq`` reads a dead-letter queue with get-without-ack +
    ``nack(requeue)``, and on RabbitMQ 3.x (and 4.0-4.2) every such requeue counts as a
    delivery of a quorum queue message. So a dead-letter queue must never have a delivery
    limit: it is declared without one (on 3.10 and 3.13 that is "unlimited"), it has no
    dead-letter exchange of its own (nowhere to go), and :data:`DEAD_LETTER_POLICY`, at a
    priority above any other policy of ours, keeps a broad operator policy carrying a
    ``delivery-limit`` off it (one policy applies to a queue: the highest priority). On
    RabbitMQ 4.x, whose quorum queues default to a limit of 20, ``amsctl topology apply``
    adds ``delivery-limit: -1`` (unlimited) to that policy, and ``amsctl dlq`` refuses to
    read a dead-letter queue on which any limit is in effect (docs/operations.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from shared import events
from shared.durations import UNIT_MS, duration_parts
from shared.messaging import AGGREGATE_SLOTS, EVENTS_EXCHANGE, H_AGGREGATE_SLOT, REPLAY_EXCHANGE

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
    """``exchange`` routes ``routing_key`` to ``destination``: a queue, or an exchange."""

    exchange: str
    destination: str
    routing_key: str
    destination_type: str = "queue"
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Policy:
    """A management policy; RabbitMQ recommends policies for DLX and limits (changeable live)."""

    name: str
    pattern: str
    definition: dict[str, Any]
    apply_to: str = "queues"
    priority: int = 0


_DELAY_UNITS = ("ms", "s", "m", "h")


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
        """One whole number and one unit (``500ms``, ``5s``, ``2m``, ``1h``): the label
        names a queue."""
        try:
            [(amount_text, unit)] = duration_parts(token)
        except ValueError:
            amount_text, unit = "", ""
        if not amount_text.isdigit() or int(amount_text) <= 0 or unit not in _DELAY_UNITS:
            raise ValueError(f"invalid retry delay {token!r}; expected e.g. 500ms, 5s, 2m, 1h")
        amount = int(amount_text)
        return cls(label=f"{amount}{unit}", milliseconds=amount * UNIT_MS[unit])


def parse_retry_delays(text: str) -> tuple[RetryDelay, ...]:
    """``"1s,5s,30s"`` -> the retry steps, in order; at least one."""
    delays = tuple(RetryDelay.parse(token) for token in text.split(",") if token.strip())
    if not delays:
        raise ValueError("at least one retry delay is required")
    return delays


MAX_PARTITIONS = AGGREGATE_SLOTS


@dataclass(frozen=True)
class ConsumerSpec:
    """One consumer: its name (= work queue), its database and the routing keys it handles.

    With ``partitions`` > 1 the consumer has one work queue per partition, and the names
    below are those of partition ``partition``; :meth:`queues` and :meth:`bindings` cover
    every partition. ``partitionable`` is False for a consumer that scales otherwise (OCR
    runs its own process pool): it keeps one queue whatever ``WORKER_PARTITIONS`` says.
    """

    name: str
    database: str
    routing_keys: tuple[str, ...]
    partitions: int = 1
    partition: int = 0
    partitionable: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.partitions <= MAX_PARTITIONS:
            raise ValueError(
                f"consumer {self.name!r}: partitions must be 1 to {MAX_PARTITIONS}, "
                f"not {self.partitions}"
            )
        if not 0 <= self.partition < self.partitions:
            raise ValueError(
                f"consumer {self.name!r} has partitions 0 to {self.partitions - 1}, "
                f"not {self.partition}"
            )

    def with_partitions(self, partitions: int) -> ConsumerSpec:
        """This consumer split into ``partitions`` (unchanged if it is not partitionable)."""
        if not self.partitionable:
            return self
        return replace(self, partitions=partitions, partition=0)

    def for_partition(self, partition: int) -> ConsumerSpec:
        return replace(self, partition=partition)

    @property
    def partitioned(self) -> bool:
        return self.partitions > 1

    @property
    def queue_name(self) -> str:
        return f"{self.name}.p{self.partition}" if self.partitioned else self.name

    @property
    def exchange_name(self) -> str:
        """The headers exchange in front of the partitions (partitioned only)."""
        return f"{self.name}.partitions"

    @property
    def unslotted_exchange_name(self) -> str:
        """Where a message without ``aggregate-slot`` goes: partition 0."""
        return f"{self.name}.unslotted"

    @property
    def dlq_name(self) -> str:
        return f"{self.name}.dlq"

    def retry_queue_name(self, delay: RetryDelay) -> str:
        return f"{self.queue_name}.retry.{delay.label}"

    def work_queue(self) -> Queue:
        partitioned = {"x-single-active-consumer": True} if self.partitioned else {}
        return Queue(self.queue_name, arguments={
            "x-queue-type": "quorum",
            "x-delivery-limit": DELIVERY_LIMIT,
            **partitioned,
            **_dead_letter_to(self.dlq_name),
        })

    def dead_letter_queue(self) -> Queue:
        return Queue(self.dlq_name, arguments={"x-queue-type": "quorum"})

    def retry_queue(self, delay: RetryDelay) -> Queue:
        return Queue(self.retry_queue_name(delay), arguments={
            "x-queue-type": "quorum",
            "x-message-ttl": delay.milliseconds,
            **_dead_letter_to(self.queue_name),
        })

    def _partitions(self) -> tuple[ConsumerSpec, ...]:
        return tuple(self.for_partition(i) for i in range(self.partitions))

    def queues(self, delays: tuple[RetryDelay, ...]) -> tuple[Queue, ...]:
        """Every queue of the consumer: work and retry queues of each partition, the DLQ."""
        out: list[Queue] = []
        for part in self._partitions():
            out.append(part.work_queue())
            out.extend(part.retry_queue(d) for d in dict.fromkeys(delays))
        return (*out, self.dead_letter_queue())

    def exchanges(self) -> tuple[Exchange, ...]:
        if not self.partitioned:
            return ()
        # Internal: reached only through bindings (from ``events``), never published to.
        return (
            Exchange(self.unslotted_exchange_name, "fanout", internal=True),
            Exchange(
                self.exchange_name, "headers", internal=True,
                arguments={"alternate-exchange": self.unslotted_exchange_name},
            ),
        )

    def work_queue_names(self) -> tuple[str, ...]:
        """The work queue, or every partition's: where a dead letter may be replayed to."""
        return tuple(part.queue_name for part in self._partitions())

    def replay_bindings(self) -> tuple[Binding, ...]:
        return tuple(Binding(REPLAY_EXCHANGE, name, name) for name in self.work_queue_names())

    def bindings(self) -> tuple[Binding, ...]:
        if not self.partitioned:
            return tuple(
                Binding(EVENTS_EXCHANGE, self.queue_name, key) for key in self.routing_keys
            )
        parts = self._partitions()
        into_exchange = tuple(
            Binding(EVENTS_EXCHANGE, self.exchange_name, key, "exchange")
            for key in self.routing_keys
        )
        slots = tuple(
            Binding(
                self.exchange_name, parts[slot % self.partitions].queue_name, "",
                arguments={"x-match": "all", H_AGGREGATE_SLOT: str(slot)},
            )
            for slot in range(AGGREGATE_SLOTS)
        )
        unslotted = Binding(self.unslotted_exchange_name, parts[0].queue_name, "")
        return (*into_exchange, *slots, unslotted)

    def policy(self) -> Policy:
        """The work queue's limits as a policy, so an operator can tune them on a live queue."""
        definition = {
            "delivery-limit": DELIVERY_LIMIT,
            "dead-letter-exchange": "",
            "dead-letter-routing-key": self.dlq_name,
            "dead-letter-strategy": "at-least-once",
            "overflow": "reject-publish",
        }
        # The work queue, or any of its partitions.
        return Policy(f"ams-{self.name}", rf"^{re.escape(self.name)}(\.p\d+)?$", definition)


DEAD_LETTER_POLICY = Policy(
    "ams-dead-letters",
    r"\.dlq$",
    # Refuse (the publisher retries) rather than drop the oldest dead letter, should anyone
    # ever cap a dead-letter queue's length: drop-head is RabbitMQ's default overflow.
    {"overflow": "reject-publish"},
    priority=100,
)
"""The one policy of every dead-letter queue: outranks any policy that could set a delivery
limit on it. On RabbitMQ 4.x :func:`dead_letter_policy` adds ``delivery-limit: -1``."""


def dead_letter_policy(broker_major_version: int) -> Policy:
    """:data:`DEAD_LETTER_POLICY` for a broker of this major version (4.x: no limit, -1)."""
    if broker_major_version < 4:
        return DEAD_LETTER_POLICY
    return replace(
        DEAD_LETTER_POLICY, definition={**DEAD_LETTER_POLICY.definition, "delivery-limit": -1}
    )


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
    # OCR scales with its own process pool (OCR_WORKERS), not with partitions.
    ConsumerSpec("ocr", "admindb", (events.DocumentUploaded.event_type,), partitionable=False),
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


def _carries_saga(routing_key: str) -> bool:
    return any(cls.event_type == routing_key and "saga_id" in cls.__struct_fields__
               for cls in events.CATALOGUE.values())


SAGA_DEAD_LETTER_QUEUES: frozenset[str] = frozenset(
    spec.dlq_name for spec in CONSUMERS if any(map(_carries_saga, spec.routing_keys))
)
"""The dead-letter queues a saga's commands and replies (the events naming a ``saga_id``) can
end in: those of the consumers that handle one. A saga's page reads only these."""


def consumer_spec(name: str) -> ConsumerSpec:
    for spec in CONSUMERS:
        if spec.name == name:
            return spec
    raise KeyError(f"unknown consumer {name!r}")


EVENTS = Exchange(EVENTS_EXCHANGE)
"""Every event and saga command goes through this durable topic exchange."""

REPLAY = Exchange(REPLAY_EXCHANGE, "direct")
"""Replays of dead letters: routing key = work queue name, bound for each work queue."""


@dataclass(frozen=True)
class Permissions:
    """A broker user's permissions in one vhost (regular expressions over resource names;
    the default exchange is ``amq.default``)."""

    configure: str
    write: str
    read: str


OPERATOR_PERMISSIONS = Permissions(
    # Declare and delete nothing (passive declares need no permission).
    configure="^$",
    # Publish only to the replay exchange: not the default exchange (any queue by name),
    # not ``events`` (every subscriber), not a retry queue. basic.get, ack and queue.purge
    # need read, not write.
    write=f"^{re.escape(REPLAY_EXCHANGE)}$",
    # basic.get / ack on dead-letter queues, never on work queues.
    read=r"^.*\.dlq$",
)
"""The operator's broker user (``amsctl dlq``, the console): read dead letters, replay them
through :data:`REPLAY`; ``amsctl topology apply`` writes these (docs/operations.md)."""


@dataclass(frozen=True)
class Topology:
    """Everything to declare on the broker for a set of consumers."""

    exchanges: tuple[Exchange, ...]
    queues: tuple[Queue, ...]
    bindings: tuple[Binding, ...]
    policies: tuple[Policy, ...]

    @property
    def replay_targets(self) -> frozenset[str]:
        """The queues a dead letter may be replayed to: those bound to :data:`REPLAY`."""
        return frozenset(b.destination for b in self.bindings if b.exchange == REPLAY_EXCHANGE)


def topology_of(
    specs: tuple[ConsumerSpec, ...], delays: tuple[RetryDelay, ...]
) -> Topology:
    """The exchanges, queues, bindings and policies of ``specs``."""
    return Topology(
        exchanges=(EVENTS, REPLAY, *(ex for spec in specs for ex in spec.exchanges())),
        queues=tuple(q for spec in specs for q in spec.queues(delays)),
        bindings=tuple(
            b for spec in specs for b in (*spec.bindings(), *spec.replay_bindings())
        ),
        policies=(*(spec.policy() for spec in specs), DEAD_LETTER_POLICY),
    )


def deployed(delays: tuple[RetryDelay, ...], partitions: int = 1) -> Topology:
    """The product's topology with the configured retry delays and partitions."""
    return topology_of(tuple(spec.with_partitions(partitions) for spec in CONSUMERS), delays)


DEFAULT = deployed(parse_retry_delays(DEFAULT_RETRY_DELAYS))
"""The topology ``infra/rabbitmq/definitions.json`` holds (default settings)."""
