"""Failure routing through the processor, on fakes: a failed message goes to the right
retry queue or the dead-letter queue, with its reason, and only then is the original
acked; if even that publish fails, the original goes back to the queue."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from aio_pika.abc import AbstractChannel
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared import messaging as m
from shared.errors import DomainError, TransientError
from shared.events import UserRegistered, encode
from shared.topology import ConsumerSpec, parse_retry_delays
from workers.runtime import acks
from workers.runtime.processor import Processor, RetryPolicy

SPEC = ConsumerSpec("fr", "apidb", (UserRegistered.event_type,))
POLICY = RetryPolicy(max_attempts=3, delays=parse_retry_delays("1s,5s"))


@dataclass
class Delivery:
    """An incoming message as the runtime sees it; records how it was settled."""

    type: str | None = UserRegistered.event_type
    body: bytes = field(
        default_factory=lambda: encode(UserRegistered(user_id=uuid.uuid4(), email="a@b.io"))
    )
    headers: dict[str, Any] = field(default_factory=lambda: {m.H_SCHEMA_VERSION: 1})
    message_id: str | None = field(default_factory=lambda: str(uuid.uuid4()))
    correlation_id: str | None = "corr-1"
    content_type: str | None = "application/json"
    content_encoding: str | None = None
    timestamp: datetime | None = field(default_factory=lambda: datetime.now(UTC))
    app_id: str | None = "authdb"
    delivery_tag: int | None = 1
    redelivered: bool | None = False
    routing_key: str | None = UserRegistered.event_type
    channel: object = None
    settled: list[str] = field(default_factory=list)

    async def ack(self, multiple: bool = False) -> None:
        self.settled.append("ack")

    async def nack(self, requeue: bool = True) -> None:
        self.settled.append("requeue" if requeue else "nack")


class Result:
    def __init__(self, value: object) -> None:
        self._value = value

    def scalar_one_or_none(self) -> object:
        return self._value


class InboxSession:
    """Just enough of a session for the inbox: nothing seen before, every claim new."""

    def __init__(self) -> None:
        self.info: dict[str, Any] = {}
        self.committed = False

    async def __aenter__(self) -> InboxSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def execute(self, statement: Any, params: Any = None) -> Result:
        return Result(1 if "INSERT" in str(statement) else None)

    async def commit(self) -> None:
        self.committed = True

    async def rollback(self) -> None:
        return None


@dataclass
class Exchange:
    published: list[tuple[str, dict[str, Any], str | None]] = field(default_factory=list)
    broken: bool = False

    async def publish(self, message: Any, routing_key: str, mandatory: bool = False) -> None:
        if self.broken:
            raise ConnectionError("channel closed")
        self.published.append((routing_key, dict(message.headers), message.message_id))


@dataclass
class Channel:
    default_exchange: Exchange = field(default_factory=Exchange)


def processor(handler: Any, channel: Channel) -> Processor:
    sessions = cast(async_sessionmaker[AsyncSession], InboxSession)
    return Processor(
        SPEC, {UserRegistered.event_type: (UserRegistered, handler)}, sessions,
        cast(AbstractChannel, channel), POLICY,
    )


def failing(exc: Exception) -> Any:
    async def handler(*_: object) -> None:
        raise exc

    return handler


async def test_a_transient_failure_goes_to_the_first_retry_queue() -> None:
    channel, delivery = Channel(), Delivery()
    await processor(failing(TransientError("db away")), channel).process(delivery)
    [(queue, headers, message_id)] = channel.default_exchange.published
    assert queue == SPEC.retry_queue_name(POLICY.delays[0]) == "fr.retry.1s"
    assert headers[m.H_ATTEMPTS] == 1
    assert headers[m.H_ERROR_TYPE] == "shared.errors.TransientError"
    assert headers[m.H_ERROR_MESSAGE] == "db away"
    assert message_id == delivery.message_id
    assert delivery.settled == ["ack"]


async def test_later_attempts_wait_longer_and_the_last_one_dead_letters() -> None:
    channel = Channel()
    handler = failing(TransientError("still away"))
    second = Delivery(headers={m.H_SCHEMA_VERSION: 1, m.H_ATTEMPTS: 1})
    last = Delivery(headers={m.H_SCHEMA_VERSION: 1, m.H_ATTEMPTS: 2})
    await processor(handler, channel).process(second)
    await processor(handler, channel).process(last)
    queues = [queue for queue, _, _ in channel.default_exchange.published]
    assert queues == ["fr.retry.5s", SPEC.dlq_name]
    assert channel.default_exchange.published[1][1][m.H_ATTEMPTS] == 3


async def test_a_domain_error_is_dead_lettered_at_once() -> None:
    channel, delivery = Channel(), Delivery()
    await processor(failing(DomainError("rule broken")), channel).process(delivery)
    assert [queue for queue, _, _ in channel.default_exchange.published] == ["fr.dlq"]
    assert delivery.settled == ["ack"]


async def test_an_unknown_event_is_dead_lettered_without_running_a_handler() -> None:
    ran: list[object] = []

    async def handler(*args: object) -> None:
        ran.append(args)

    channel = Channel()
    delivery = Delivery(type="no.such.event")
    await processor(handler, channel).process(delivery)
    [(queue, headers, _)] = channel.default_exchange.published
    assert queue == "fr.dlq"
    assert headers[m.H_ERROR_TYPE] == "shared.errors.InvalidMessage"
    assert ran == []


async def test_a_success_is_acked_and_publishes_nothing() -> None:
    async def handler(*_: object) -> None:
        return None

    channel, delivery = Channel(), Delivery()
    await processor(handler, channel).process(delivery)
    assert channel.default_exchange.published == []
    assert delivery.settled == ["ack"]


async def test_when_the_failure_cannot_be_published_the_original_is_requeued(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(acks, "REQUEUE_PAUSE_S", 0)
    channel, delivery = Channel(Exchange(broken=True)), Delivery()
    await processor(failing(TransientError("db away")), channel).process(delivery)
    assert delivery.settled == ["requeue"]  # not acked: nothing is lost
