"""Runtime pieces with no I/O: failure mapping, failure headers, per-aggregate ordering."""

from __future__ import annotations

import asyncio

import sqlalchemy.exc

from shared import messaging as m
from shared.errors import InvalidMessage, LegalHold, TransientError
from workers.batching import Batcher
from workers.failures import Failure, Outcome, attempts_of, classify, failure_headers
from workers.ordering import KeyedSerializer


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
