"""The relay's rules on fakes (:mod:`tests.fakes`): what it publishes, in which order, when
it deletes, how it retries, how copies share the partitions, and when it wakes up.

The same loop against PostgreSQL and RabbitMQ: ``tests/integration/test_relay.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from outbox.relay import DELETE_AT_ONCE, Relay
from outbox.rows import OutboxRow
from outbox.schema import PARTITIONS
from outbox.store import Failure
from outbox.writer import aggregate_partition
from shared.config import Settings
from tests.fakes import FakeLeases, FakeOutbox, FakeOutboxQueue, FakePublisher

FAST: dict[str, Any] = {
    "relay_batch_size": 50,
    "relay_max_batches_in_flight": 4,
    "relay_poll_min_s": 0.01,
    "relay_poll_max_s": 0.05,
    "relay_backoff_base_s": 0.01,
    "relay_backoff_max_s": 0.04,
    "relay_max_attempts": 3,
    "relay_rebalance_s": 0.02,
    "relay_vacuum_every": 0,
}


def fast(**relay: Any) -> Settings:
    """Settings with the relay's periods in milliseconds."""
    return Settings.build(**{**FAST, **relay})


@dataclass
class Copy:
    """One relay copy on a fake database, with its ports."""

    relay: Relay
    queue: FakeOutboxQueue
    leases: FakeLeases
    publisher: FakePublisher


def relay_on(outbox: FakeOutbox, settings: Settings, **publisher: Any) -> Copy:
    leases = FakeLeases(outbox)
    queue = FakeOutboxQueue(outbox, leases)
    fake = FakePublisher(**publisher)
    relay = Relay(
        database="authdb", queue=queue, leases=leases, publisher=fake, settings=settings.relay
    )
    return Copy(relay, queue, leases, fake)


@contextlib.asynccontextmanager
async def running(copy: Copy, *, ready: bool = True) -> AsyncIterator[Copy]:
    stop = asyncio.Event()
    task = asyncio.create_task(copy.relay.run(stop))
    try:
        if ready:
            await asyncio.wait_for(copy.relay.ready.wait(), 2)
        yield copy
    finally:
        stop.set()
        copy.publisher.release()
        await asyncio.wait_for(task, 5)


async def until(check: Callable[[], bool], what: str, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.002)


def ids(rows: list[OutboxRow]) -> list[int]:
    return [row.id for row in rows]


def in_partitions(partitions: set[int], n: int) -> list[str]:
    """``n`` aggregate ids of type ``user`` whose partitions are among ``partitions``."""
    found = (f"agg-{i}" for i in range(10_000))
    return [a for a in found if aggregate_partition("user", a) in partitions][:n]


# --- order, confirms, batches --------------------------------------------------------------
async def test_every_row_is_published_once_in_commit_order_per_aggregate_then_deleted() -> None:
    outbox = FakeOutbox()
    copy = relay_on(outbox, fast(relay_batch_size=4, relay_max_batches_in_flight=3))
    added = [outbox.add(f"agg-{n % 5}") for n in range(20)]
    async with running(copy):
        added += [outbox.add(f"agg-{n % 5}") for n in range(20)]
        await until(lambda: not outbox.rows, "the outbox is empty")
    confirmed = copy.publisher.confirmed
    assert sorted(ids(confirmed)) == ids(added), "every row confirmed exactly once"
    assert len(copy.publisher.published) == len(added), "and published exactly once"
    for aggregate in {row.aggregate_id for row in added}:
        mine = [row.id for row in confirmed if row.aggregate_id == aggregate]
        assert mine == sorted(mine), f"{aggregate} out of commit order"


async def test_a_row_stays_in_the_outbox_until_the_broker_confirms_it() -> None:
    outbox = FakeOutbox()
    copy = relay_on(outbox, fast())
    async with running(copy):
        copy.publisher.hold()
        rows = [outbox.add(f"agg-{n}") for n in range(3)]
        await until(lambda: len(copy.publisher.published) == 3, "the broker has the rows")
        await asyncio.sleep(0.05)
        assert sorted(outbox.rows) == ids(rows), "published, unconfirmed: kept"
        copy.publisher.release()
        await until(lambda: not outbox.rows, "confirmed rows are deleted")
    assert ids(copy.publisher.confirmed) == ids(rows)


async def test_batches_hold_at_most_the_batch_size_and_the_in_flight_budget() -> None:
    outbox = FakeOutbox()
    copy = relay_on(outbox, fast(relay_batch_size=3, relay_max_batches_in_flight=2))
    copy.publisher.hold()
    rows = [outbox.add(f"agg-{n}") for n in range(10)]
    async with running(copy):
        await until(lambda: len(copy.publisher.batches) == 2, "two batches out")
        await asyncio.sleep(0.05)
        assert [len(b) for b in copy.publisher.batches] == [3, 3], "no third batch in flight"
        copy.publisher.release()
        await until(lambda: not outbox.rows, "the rest follows")
    sizes = [len(b) for b in copy.publisher.batches]
    assert max(sizes) <= 3 and sum(sizes) == len(rows), sizes


# --- failures ---------------------------------------------------------------------------------
async def test_a_nacked_row_is_retried_after_its_backoff_and_its_aggregate_waits() -> None:
    outbox = FakeOutbox()
    copy = relay_on(outbox, fast(relay_backoff_base_s=0.2, relay_backoff_max_s=1.0))
    x1, y1 = outbox.add("x"), outbox.add("y")
    copy.publisher.nack(x1.event_id)
    async with running(copy):
        await until(lambda: copy.queue.failures != [], "the nack is recorded")
        x2, y2 = outbox.add("x"), outbox.add("y")  # x2 is due at once, but x1 is not
        await until(lambda: not outbox.rows, "the outbox is empty")
    assert copy.queue.failures == [Failure(x1.id, "nacked by the broker", 0.2)]
    assert ids(copy.publisher.confirmed) == ids([y1, y2, x1, x2])


async def test_a_nacked_row_holds_back_the_later_rows_of_its_aggregate_until_its_retry() -> None:
    """x2 in the same batch as the nacked x1, x3 committed while x1 is unconfirmed: neither
    reaches the broker before x1's retry is confirmed (consumers rely on arrival order)."""
    outbox = FakeOutbox()
    copy = relay_on(outbox, fast())
    x1, x2 = outbox.add("x"), outbox.add("x")
    copy.publisher.nack(x1.event_id)
    copy.publisher.hold()
    async with running(copy):
        await until(lambda: copy.publisher.batches != [], "x1 is out, unconfirmed")
        x3 = outbox.add("x")
        await asyncio.sleep(0.05)
        copy.publisher.release()
        await until(lambda: not outbox.rows, "the outbox is empty")
    assert copy.queue.failures == [Failure(x1.id, "nacked by the broker", 0.01)]
    assert ids(copy.publisher.published) == ids([x1, x2, x3]), "delivered in commit order"
    assert ids(copy.publisher.confirmed) == ids([x1, x2, x3])


async def test_a_returned_row_holds_back_the_later_rows_of_its_aggregate_until_its_retry(
) -> None:
    """The same for a mandatory message the broker returns (no queue bound yet)."""
    outbox = FakeOutbox()
    copy = relay_on(outbox, fast(), unroutable=["document.uploaded"])
    x1 = outbox.add("x", routing_key="document.uploaded")
    x2, y1 = outbox.add("x"), outbox.add("y")
    async with running(copy):
        await until(lambda: copy.queue.failures != [], "x1 returned")
        await asyncio.sleep(0.005)  # x1 backs off; x2 must not go meanwhile
        copy.publisher.unroutable.clear()  # a consumer binds its queue
        await until(lambda: not outbox.rows, "the outbox is empty")
    assert [f.row_id for f in copy.queue.failures] == [x1.id]
    assert ids(copy.publisher.published) == ids([y1, x1, x2])
    assert ids(copy.publisher.confirmed) == ids([y1, x1, x2])


async def test_different_aggregates_stay_in_flight_together_while_one_aggregate_waits() -> None:
    """One unconfirmed row per aggregate: x2 waits for x1's confirm, while y1 and z1 (a
    later batch) are published beside x1 without waiting for any confirm."""
    outbox = FakeOutbox()
    copy = relay_on(outbox, fast())
    copy.publisher.hold()
    x1, x2, y1 = outbox.add("x"), outbox.add("x"), outbox.add("y")
    async with running(copy):
        await until(lambda: len(copy.publisher.published) >= 2, "x1 and y1 out")
        z1 = outbox.add("z")
        await until(lambda: len(copy.publisher.batches) == 2, "a second batch, unconfirmed")
        await asyncio.sleep(0.05)
        assert ids(copy.publisher.published) == ids([x1, y1, z1]), "x2 waits for x1"
        assert copy.publisher.confirmed == []
        copy.publisher.release()
        await until(lambda: not outbox.rows, "the outbox is empty")
    assert ids(copy.publisher.published) == ids([x1, y1, z1, x2])
    assert [ids(b) for b in copy.publisher.batches] == [ids([x1, y1]), ids([z1]), ids([x2])]


async def test_a_burst_of_one_aggregate_does_not_hold_back_the_events_of_others() -> None:
    """x's 500 events go out one confirm at a time; y1, committed after them, must not wait
    for them to drain (it did: x's waiting rows filled the in-flight budget of 200 rows, and
    y1 was claimed only once 300 of them were confirmed)."""
    outbox = FakeOutbox()
    copy = relay_on(outbox, fast())
    burst = [outbox.add("x") for _ in range(500)]
    y1 = outbox.add("y")
    async with running(copy):
        await until(lambda: y1 in copy.publisher.published, "y1 published", timeout=5)
        x_before_y = copy.publisher.published.index(y1)
        await until(lambda: not outbox.rows, "the burst drained", timeout=10)
    assert x_before_y <= 2, f"y1 was published after {x_before_y} of x's events"
    xs = [row for row in copy.publisher.published if row.aggregate_id == "x"]
    assert ids(xs) == ids(burst), "x's events once each, in commit order"


async def test_backoff_doubles_up_to_its_cap_then_the_row_is_parked_and_others_flow() -> None:
    outbox = FakeOutbox()
    settings = fast(relay_max_attempts=4, relay_backoff_base_s=0.01, relay_backoff_max_s=0.025)
    copy = relay_on(outbox, settings, unroutable=["document.uploaded"])
    poison = outbox.add("x", routing_key="document.uploaded")
    other = outbox.add("y")
    async with running(copy):
        await until(lambda: outbox.rows[poison.id].parked_at is not None, "parked")
        behind = outbox.add("x")
        await until(lambda: behind.id not in outbox.rows, "x flows again once parked")
    assert [f.delay_s for f in copy.queue.failures] == [0.01, 0.02, 0.025, 0.025]
    parked = outbox.rows[poison.id]
    assert (parked.row.attempts, parked.last_error) == (4, "unroutable")
    assert list(outbox.rows) == [poison.id], "the parked row stays for an operator"
    assert ids(copy.publisher.confirmed) == ids([other, behind])


async def test_a_failure_that_cannot_be_written_at_once_is_written_on_a_retry() -> None:
    outbox = FakeOutbox()
    copy = relay_on(outbox, fast())
    x1 = outbox.add("x")
    copy.publisher.nack(x1.event_id)
    copy.queue.fail_writes = 1
    async with running(copy):
        await until(lambda: not outbox.rows, "retried and confirmed")
    assert copy.queue.failures == [Failure(x1.id, "nacked by the broker", 0.01)]
    assert ids(copy.publisher.confirmed) == [x1.id]


async def test_a_connection_lost_before_the_confirms_counts_no_attempt_and_republishes() -> None:
    outbox = FakeOutbox()
    copy = relay_on(outbox, fast())
    rows = [outbox.add("x") for _ in range(3)]
    copy.publisher.break_next_confirm()
    async with running(copy):
        await until(lambda: not outbox.rows, "published again after reconnecting")
    assert copy.queue.failures == [], "an unknown outcome is not a rejection"
    assert ids(copy.publisher.confirmed) == ids(rows), "each confirmed once, in order"
    # One row of an aggregate out at a time: only the first was out when the link broke.
    assert ids(copy.publisher.published) == ids(rows[:1] + rows), "at least once: a duplicate"


async def test_a_broker_that_is_down_delays_every_row_and_loses_none() -> None:
    outbox = FakeOutbox()
    copy = relay_on(outbox, fast())
    copy.publisher.down = True
    rows = [outbox.add(f"agg-{n}") for n in range(5)]
    async with running(copy, ready=False):
        await asyncio.sleep(0.3)
        assert sorted(outbox.rows) == ids(rows) and copy.publisher.published == []
        copy.publisher.down = False
        await until(lambda: not outbox.rows, "published once the broker is back")
    assert ids(copy.publisher.confirmed) == ids(rows)


# --- partitions ---------------------------------------------------------------------------
async def test_a_relay_that_lost_its_leases_claims_nothing_until_it_holds_partitions_again(
) -> None:
    outbox = FakeOutbox()
    copy = relay_on(outbox, fast())
    async with running(copy):
        outbox.add("x")
        await until(lambda: not outbox.rows, "the first row is out")
        outbox.down = True  # the database refuses the relay's reconnection
        outbox.drop(copy.leases)
        claims = len(copy.queue.claims)
        late = [outbox.add("x"), outbox.add("y")]
        await asyncio.sleep(0.3)
        assert len(copy.queue.claims) == claims, "no claim without the leases"
        assert sorted(outbox.rows) == ids(late)
        outbox.down = False
        await until(lambda: not outbox.rows, "published once the leases are back")
    assert len(copy.leases.owned) == 0, "closed on stop"
    assert ids(copy.publisher.confirmed)[-2:] == ids(late)


async def test_two_relays_split_the_partitions_and_each_publishes_only_its_own() -> None:
    outbox = FakeOutbox()
    one, two = relay_on(outbox, fast()), relay_on(outbox, fast())
    async with running(one), running(two, ready=False):
        half = PARTITIONS // 2
        await until(
            lambda: len(one.leases.owned) == len(two.leases.owned) == half, "an even split"
        )
        owned = {id(one): set(one.leases.owned), id(two): set(two.leases.owned)}
        rows = [outbox.add(f"agg-{n % 40}") for n in range(120)]
        await until(lambda: not outbox.rows, "the outbox is empty")
    for copy in (one, two):
        partitions = {aggregate_partition("user", r.aggregate_id) for r in copy.publisher.published}
        assert partitions <= owned[id(copy)], "a relay published a partition it did not own"
        assert copy.publisher.confirmed, "both relays published"
    confirmed = ids(one.publisher.confirmed) + ids(two.publisher.confirmed)
    assert sorted(confirmed) == ids(rows)


async def test_a_relay_cut_off_from_the_broker_hands_its_partitions_to_the_others() -> None:
    outbox = FakeOutbox()
    one, two = relay_on(outbox, fast()), relay_on(outbox, fast())
    async with running(one), running(two, ready=False):
        await until(lambda: len(two.leases.owned) == PARTITIONS // 2, "an even split")
        one.publisher.down = True
        outbox.add("x")  # one's claim fails: it stops, and leaves
        rows = [outbox.add(f"agg-{n}") for n in range(40)]
        await until(lambda: not outbox.rows, "the other relay publishes everything")
        assert one.leases.owned == set() and len(two.leases.owned) == PARTITIONS
    assert set(ids(rows)) <= set(ids(two.publisher.confirmed))


async def test_a_relay_that_cannot_reach_the_broker_does_not_rejoin_the_others() -> None:
    """Its connect hangs, then fails: were it a member meanwhile, the others' share would
    halve and the partitions they released would wait for nobody."""
    outbox = FakeOutbox()
    one, two = relay_on(outbox, fast()), relay_on(outbox, fast())
    async with running(one), running(two, ready=False):
        await until(lambda: len(two.leases.owned) == PARTITIONS // 2, "an even split")
        one.publisher.down, one.publisher.connect_s = True, 0.1
        for n in range(40):
            outbox.add(f"agg-{n}")  # one's next batch fails
        await until(lambda: len(two.leases.owned) == PARTITIONS, "two took everything")
        held = []
        for _ in range(100):  # 1 s: one tries to reconnect after 0.2 s and 0.6 s
            held.append(len(outbox.holders))
            await asyncio.sleep(0.01)
        assert min(held) == PARTITIONS, "partitions owned by nobody while two could publish"


async def test_a_partition_changes_hands_only_when_nothing_is_in_flight() -> None:
    outbox = FakeOutbox()
    one, two = relay_on(outbox, fast()), relay_on(outbox, fast())
    async with running(one):
        await until(lambda: len(one.leases.owned) == PARTITIONS, "one relay owns everything")
        one.publisher.hold()
        row = outbox.add("x")
        await until(lambda: one.publisher.batches != [], "a batch in flight")
        async with running(two, ready=False):
            await asyncio.sleep(0.15)  # several rebalance periods
            assert len(one.leases.owned) == PARTITIONS, "released with a batch in flight"
            assert two.leases.owned == set()
            one.publisher.release()
            await until(lambda: len(two.leases.owned) == PARTITIONS // 2, "then shared")
    assert row.id not in outbox.rows
    assert ids(one.publisher.confirmed) == [row.id]


# --- waking up ------------------------------------------------------------------------------
async def test_a_commit_notification_wakes_the_idle_relay_before_its_poll() -> None:
    outbox = FakeOutbox()
    copy = relay_on(outbox, fast(relay_poll_min_s=5.0, relay_poll_max_s=5.0))
    async with running(copy):
        await asyncio.sleep(0.1)  # idle on a 5 s poll
        started = time.monotonic()
        row = outbox.add("x")
        await until(lambda: copy.publisher.confirmed, "woken by the notification", timeout=1.0)
        assert time.monotonic() - started < 1.0
        assert ids(copy.publisher.confirmed) == [row.id]


async def test_without_notifications_the_idle_relay_polls_ever_less_often() -> None:
    outbox = FakeOutbox()
    outbox.notify = False
    copy = relay_on(outbox, fast(relay_poll_min_s=0.01, relay_poll_max_s=0.08))
    async with running(copy):
        await asyncio.sleep(0.6)
        times = [at for at, _, _ in copy.queue.claims]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        # 10, 20, 40, 80, 80… ms: about 10 claims in 0.6 s (60 at a steady 10 ms).
        assert 5 <= len(times) <= 14, gaps
        assert min(gaps[-3:]) >= 0.07 and max(gaps) < 0.15, gaps  # capped at 80 ms
        outbox.add("x")
        await until(lambda: not outbox.rows, "found by the poll", timeout=0.5)


async def test_a_wake_up_brings_the_poll_back_to_its_shortest_interval() -> None:
    """A notification whose row an earlier claim already took still means commits are
    happening, and one committing beside the notifier sends none (one notifier at a time):
    the relay looks again within the shortest poll, not the interval it grew while idle."""
    outbox = FakeOutbox()
    copy = relay_on(outbox, fast(relay_poll_min_s=0.01, relay_poll_max_s=1.0))
    async with running(copy):
        await asyncio.sleep(0.8)  # idle: the poll has grown to 0.64 s
        outbox.notify = False
        for member in outbox.members:
            member.notified()  # its row taken by the claim before
        await asyncio.sleep(0.005)
        started = time.monotonic()
        outbox.add("beside the notifier")
        await until(lambda: not outbox.rows, "the silent row", timeout=2.0)
        assert time.monotonic() - started < 0.25  # 1 s with the grown interval


async def test_a_trickle_of_notified_commits_costs_one_claim_each() -> None:
    """Under single-event transactions a claim that found rows is not followed by another at
    once, nor is every confirm that empties the pipeline: the next notification's claim
    deletes what was confirmed (two claims per commit at 500 commits/s, half of them empty)."""
    outbox = FakeOutbox()
    copy = relay_on(outbox, fast(relay_poll_min_s=0.5, relay_poll_max_s=0.5))
    async with running(copy):
        await asyncio.sleep(0.05)
        before = len(copy.queue.claims)
        rows = []
        for i in range(10):
            rows.append(outbox.add(f"agg-{i}"))
            await asyncio.sleep(0.02)
        await until(lambda: len(copy.publisher.confirmed) == 10, "all confirmed")
        assert len(copy.queue.claims) - before <= 11
        # each row deleted by a later commit's claim, the last one after the shortest poll
        assert not any(row.id in outbox.rows for row in rows[:-1])


async def test_confirmed_rows_are_deleted_within_the_shortest_poll_when_no_claim_comes() -> None:
    """A confirm that arrives while the idle relay's poll has grown still gets its row deleted
    after the shortest poll interval, not the grown one."""
    outbox = FakeOutbox()
    copy = relay_on(outbox, fast(relay_poll_min_s=0.02, relay_poll_max_s=5.0))
    async with running(copy):
        copy.publisher.hold()
        row = outbox.add("held")
        await until(lambda: copy.publisher.batches, "published")
        await asyncio.sleep(0.7)  # the poll grows to 0.64 s and beyond while nothing comes
        copy.publisher.release()
        started = time.monotonic()
        await until(lambda: row.id not in outbox.rows, "deleted", timeout=2.0)
        assert time.monotonic() - started < 0.3


async def test_the_end_of_a_burst_is_deleted_at_once() -> None:
    """Many confirmed rows are deleted as soon as the last batch is confirmed, not after the
    shortest poll (the end of a backlog's drain, what bench/relay.py's throughput times)."""
    outbox = FakeOutbox()
    copy = relay_on(outbox, fast(relay_poll_min_s=5.0, relay_poll_max_s=5.0))
    async with running(copy):
        await asyncio.sleep(0.05)
        copy.publisher.hold()
        for i in range(DELETE_AT_ONCE + 10):
            outbox.add(f"agg-{i}")
        await until(lambda: len(copy.publisher.published) == DELETE_AT_ONCE + 10, "published")
        copy.publisher.release()
        await until(lambda: not outbox.rows, "deleted", timeout=1.0)


# --- stopping, vacuum ---------------------------------------------------------------------
async def test_stopping_waits_for_the_confirms_in_flight_and_deletes_their_rows() -> None:
    outbox = FakeOutbox()
    copy = relay_on(outbox, fast())
    stop = asyncio.Event()
    task = asyncio.create_task(copy.relay.run(stop))
    await asyncio.wait_for(copy.relay.ready.wait(), 2)
    copy.publisher.hold()
    rows = [outbox.add(aggregate) for aggregate in ("x", "y", "z")]
    behind = outbox.add("x")  # waits for x's confirm
    await until(lambda: copy.publisher.batches != [], "a batch in flight")
    stop.set()
    await asyncio.sleep(0.05)
    assert not task.done(), "stopped with a batch in flight"
    copy.publisher.release()
    await asyncio.wait_for(task, 2)
    assert list(outbox.rows) == [behind.id], "confirmed during the stop, deleted before leaving"
    assert ids(copy.publisher.confirmed) == ids(rows), "a waiting row is left for the next relay"
    assert not copy.publisher.connected and not copy.leases.alive and not copy.queue.connected


async def test_the_owner_of_partition_0_vacuums_the_outbox_every_n_deletes() -> None:
    outbox = FakeOutbox()
    copy = relay_on(outbox, fast(relay_batch_size=2, relay_vacuum_every=5))
    async with running(copy):
        for n in range(12):
            outbox.add(f"agg-{n}")
            await until(lambda: not outbox.rows, "published")
    assert 1 <= outbox.vacuums <= 2


async def test_a_role_that_may_not_vacuum_is_asked_once() -> None:
    """Under a least-privilege role (not the table's owner) the relay leaves the outbox to
    autovacuum after the first try, instead of a useless VACUUM every N deletes."""
    outbox = FakeOutbox()
    outbox.may_vacuum = False
    copy = relay_on(outbox, fast(relay_batch_size=2, relay_vacuum_every=2))
    async with running(copy):
        for n in range(12):
            outbox.add(f"agg-{n}")
            await until(lambda: not outbox.rows, "published")
    assert outbox.vacuums_asked == 1 and outbox.vacuums == 0


async def test_a_relay_without_partition_0_never_vacuums() -> None:
    outbox = FakeOutbox()
    other = FakeLeases(outbox)  # another relay, holding partition 0
    await other.open(lambda: None)
    outbox.holders[0] = other
    other.owned.add(0)
    copy = relay_on(outbox, fast(relay_batch_size=2, relay_vacuum_every=5))
    async with running(copy):
        for aggregate in in_partitions(copy.leases.owned, 12):
            outbox.add(aggregate)
            await until(lambda: not outbox.rows, "published")
    assert 0 not in copy.leases.owned and outbox.vacuums == 0
