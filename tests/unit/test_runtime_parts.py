"""Runtime pieces with no I/O: failure mapping, failure headers, per-aggregate ordering."""

from __future__ import annotations

import asyncio
import random
from typing import cast

import sqlalchemy.exc

from shared import messaging as m
from shared.config import Settings
from shared.errors import InvalidMessage, LegalHold, TransientError
from workers import ocr
from workers.runtime.acks import Acks
from workers.runtime.amqp import InboundMessage
from workers.runtime.batching import Batcher
from workers.runtime.failures import Failure, Outcome, attempts_of, classify, failure_headers
from workers.runtime.ordering import KeyedSerializer


def test_permanent_errors_are_dead_lettered_and_the_rest_retried() -> None:
    assert classify(LegalHold("held")) is Outcome.DEAD_LETTER
    assert classify(InvalidMessage("bad")) is Outcome.DEAD_LETTER
    assert classify(TransientError("db")) is Outcome.RETRY
    assert classify(OSError("refused")) is Outcome.RETRY
    assert classify(TimeoutError()) is Outcome.RETRY
    assert classify(sqlalchemy.exc.OperationalError("s", {}, Exception("x"))) is Outcome.RETRY
    assert classify(KeyError("bug")) is Outcome.RETRY


def _raise() -> None:
    raise TransientError("database went away")


def test_failure_headers_keep_originals_and_first_failure() -> None:
    try:
        _raise()
    except TransientError as exc:
        failure = Failure.of(exc)
    original = {
        m.H_AGGREGATE_ID: "u1", "x-death": [{"count": 1}], m.H_FIRST_FAILURE_AT: "2020-01-01",
        m.H_FAILED_ROUTING_KEY: "user.registered",
    }
    headers = failure_headers(
        original, failure, attempts=2, queue="profiles", routing_key="profiles"
    )
    assert headers[m.H_AGGREGATE_ID] == "u1"
    assert "x-death" not in headers
    assert headers[m.H_FIRST_FAILURE_AT] == "2020-01-01"
    assert headers[m.H_FAILED_ROUTING_KEY] == "user.registered"  # not the retry route
    assert headers[m.H_ATTEMPTS] == 2
    assert headers[m.H_ERROR_TYPE] == "shared.errors.TransientError"
    assert headers[m.H_ERROR_WHERE].startswith("tests.unit.test_runtime_parts:_raise:")
    assert "database went away" in headers[m.H_TRACEBACK]
    assert attempts_of(headers) == 2
    assert attempts_of({m.H_ATTEMPTS: "junk"}) == 0


async def test_same_key_runs_in_order_and_other_keys_in_parallel() -> None:
    serializer = KeyedSerializer()
    log: list[str] = []

    def job(name: str, delay: float) -> object:
        async def run() -> None:
            log.append(f"start {name}")
            await asyncio.sleep(delay)
            log.append(f"end {name}")
        return run

    serializer.submit("a", job("a1", 0.05))  # type: ignore[arg-type]
    serializer.submit("a", job("a2", 0))  # type: ignore[arg-type]
    serializer.submit("b", job("b1", 0))  # type: ignore[arg-type]
    assert await serializer.drain(2)
    assert log.index("end a1") < log.index("start a2")
    assert log.index("end b1") < log.index("end a1")  # b did not wait for a
    assert serializer.in_flight == 0


async def test_batcher_groups_waiting_items_and_bounds_concurrency() -> None:
    batches: list[list[int]] = []

    async def run(batch: list[int]) -> None:
        batches.append(batch)
        await asyncio.sleep(0.01)

    batcher: Batcher[int] = Batcher(run, max_batch=10, max_concurrency=1)
    await asyncio.gather(*(batcher.submit(i) for i in range(25)))
    assert sorted(i for b in batches for i in b) == list(range(25))
    assert max(len(b) for b in batches) == 10
    assert len(batches) <= 4


class _FakeDelivery:
    """Just what :class:`workers.runtime.acks.Acks` reads of a delivery, and the acks it got."""

    def __init__(self, channel: object, tag: int, sent: list[tuple[int, bool]]) -> None:
        self.channel = channel
        self.delivery_tag = tag
        self._sent = sent

    async def ack(self, multiple: bool = False) -> None:
        self._sent.append((self.delivery_tag, multiple))


def _delivery(channel: object, tag: int, sent: list[tuple[int, bool]]) -> InboundMessage:
    return cast(InboundMessage, _FakeDelivery(channel, tag, sent))


async def test_acks_go_in_bulk_only_over_a_finished_prefix() -> None:
    sent: list[tuple[int, bool]] = []
    channel = object()
    acks = Acks(flush_s=0.05)
    d = [_delivery(channel, tag, sent) for tag in range(1, 7)]
    for delivery in d:
        acks.track(delivery)
    await acks.ack([d[2], d[3]])  # 1 and 2 still running: nothing may cover 3 and 4 yet
    assert sent == []
    acks.settled(d[1])  # 2 went to a retry queue, acked on its own
    await acks.ack([d[0]])
    assert sent == [(4, True)]  # one ack for 1..4
    await acks.ack([d[5]])  # 5 still running: 6 is acked on its own after the flush delay
    assert sent == [(4, True)]
    await asyncio.sleep(0.15)
    assert sent == [(4, True), (6, False)]
    await acks.ack([d[4]])
    assert sent == [(4, True), (6, False), (5, True)]


async def test_acks_of_a_closed_channel_are_not_bulk_acked_on_the_new_one() -> None:
    sent: list[tuple[int, bool]] = []
    old, new = object(), object()
    acks = Acks()
    first = _delivery(old, 1, sent)
    acks.track(first)
    second = _delivery(new, 1, sent)  # after a reconnect, tags start again
    acks.track(second)
    await acks.ack([first])  # a stale delivery: acked on its own (and lost, in real life)
    await acks.ack([second])
    assert sent == [(1, False), (1, True)]


class _Broker:
    """The broker's side of acks: a tag acked twice (or unknown) would close the channel."""

    def __init__(self, tags: range) -> None:
        self.unacked = set(tags)

    def ack(self, tag: int, multiple: bool) -> None:
        assert tag in self.unacked, f"ack of unknown delivery tag {tag}"
        self.unacked -= {t for t in self.unacked if t <= tag} if multiple else {tag}


class _YieldingDelivery(_FakeDelivery):
    def __init__(self, channel: object, tag: int, broker: _Broker) -> None:
        super().__init__(channel, tag, [])
        self._broker = broker

    async def ack(self, multiple: bool = False) -> None:
        await asyncio.sleep(0)  # a socket write may let other coroutines run
        self._broker.ack(self.delivery_tag, multiple)


async def _finish_later(acks: Acks, group: list[InboundMessage], delay: float) -> None:
    await asyncio.sleep(delay)
    await acks.ack(group)


async def test_acks_never_ack_a_tag_twice_when_flushes_and_bulk_acks_interleave() -> None:
    rng = random.Random(7)
    for _ in range(50):
        broker = _Broker(range(1, 21))
        channel = object()
        acks = Acks(flush_s=0.001)
        d = [
            cast(InboundMessage, _YieldingDelivery(channel, tag, broker))
            for tag in range(1, 21)
        ]
        for delivery in d:
            acks.track(delivery)
        order = d[:]
        rng.shuffle(order)
        groups = [order[i:i + 3] for i in range(0, 20, 3)]

        await asyncio.gather(
            *(_finish_later(acks, g, rng.random() / 200) for g in groups),
            acks.flush(), acks.flush(),
        )
        await acks.flush()
        assert broker.unacked == set()


async def test_ocr_consumer_takes_only_the_jobs_its_processes_can_run() -> None:
    settings = Settings.build(ocr_workers=3, ocr_engine="tesseract")
    consumer = ocr.consumer(settings)
    # Slow jobs: a big prefetch would let one worker hold jobs an idle one could run.
    assert consumer.prefetch == 6
    assert consumer.batch_max == 1
    assert settings.worker.prefetch > consumer.prefetch
    assert consumer.spec_for(Settings.build(worker_partitions=4)).partitions == 1
