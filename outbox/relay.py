"""The relay: moves committed outbox rows to RabbitMQ, at least once, in aggregate order.

One loop per database. Each turn it claims a batch of its partitions' unsent rows (on
the connection that holds the partition locks) and starts publishing it; up to
``relay_max_batches_in_flight`` batches' worth of rows are in flight, so claiming,
publishing and deleting overlap. Under a trickle of single-event transactions that means
many small batches in flight at once: a committed row is claimed and written to the
broker at once instead of waiting for the confirm of the batch before it.

A row is deleted only after the broker confirmed it. A row the broker
rejects is retried with backoff and parked after ``relay_max_attempts``; later events of
the same aggregate wait behind it, other aggregates flow on. A broker or database outage
stops claiming, drains what is in flight, and reconnects with backoff; nothing confirmed
is lost, nothing unconfirmed is deleted.

Order per aggregate: at most one row per aggregate is out unconfirmed. A rejected row
(nack, or returned as unroutable) cannot be called back from the broker, so a later row
of its aggregate published beside it would arrive before its retry. The later rows the
relay claims while their aggregate has a row out wait in memory (they count against the
in-flight budget and are never claimed twice) and go out in a batch of their own as soon
as that row's batch is confirmed; rows of different aggregates are still pipelined. The
claim skips the aggregates that have rows waiting: a burst of one aggregate holds at most
one claim's rows (a batch) of the budget, not all of it, so the events of the others are
not queued behind its one confirm round trip per event; when an aggregate's last waiting
row goes out, the loop is woken to claim its next rows while that one is out. When
the row is rejected instead, the rows waiting behind it are let go once its failure is
written, and the claim holds them back in the database until its retry (CLAIM_SQL).

The relay sees its database through two ports, :class:`~outbox.store.OutboxQueue` and
:class:`~outbox.leases.PartitionLeases`, and the broker through
:class:`~outbox.publisher.Publisher`; ``outbox.__main__.build_relay`` wires the real ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime

import asyncpg
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from outbox import metrics
from outbox.leases import PartitionLeases
from outbox.publisher import Publisher, PublisherUnavailable, RejectedByBroker
from outbox.rows import OutboxRow
from outbox.store import Failure, OutboxQueue
from shared import tracing
from shared.config import RelaySettings
from shared.logging import get_logger
from shared.messaging import EVENTS_EXCHANGE

log = get_logger(__name__)

LOG_EACH_EVENT_MAX = 32
"""Batches up to this size log one INFO line per event; bigger ones one line per batch."""

DELETE_AT_ONCE = 64
"""Confirmed rows from which a finished batch wakes the loop to delete them at once (the end
of a burst); fewer wait for the next claim, a notification's or the shortest poll's."""

AggregateKey = tuple[str, str]
"""(aggregate type, aggregate id): the unit of order."""

DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError, TimeoutError)


class Relay:
    """Publishes one database's outbox. Safe to run as several copies (see :mod:`outbox.leases`)."""

    def __init__(
        self,
        *,
        database: str,
        queue: OutboxQueue,
        leases: PartitionLeases,
        publisher: Publisher,
        settings: RelaySettings,
        trace: bool = False,
    ) -> None:
        self.database = database
        self._queue = queue
        self._leases = leases
        self._publisher = publisher
        self._settings = settings
        self._wake = asyncio.Event()
        self._in_flight: dict[asyncio.Task[None], list[int]] = {}
        self._rows_in_flight = 0
        """Claimed rows not settled yet: published in a batch, or waiting in ``_waiting``."""
        self._waiting: dict[AggregateKey, deque[OutboxRow]] = {}
        """Aggregates with a row out unconfirmed -> their claimed rows waiting for its confirm."""
        self._waiting_rows = 0
        self._let_go: set[AggregateKey] = set()
        """Aggregates whose waiting rows were let go (a rejection) since the current claim
        began: that claim may predate the failure, so its rows of them are dropped."""
        self._sending = True
        """False while draining: a confirm sends no waiting row on."""
        self._confirmed: set[int] = set()
        """Rows the broker confirmed that are not deleted yet; never claimed again."""
        self._flush_timer: asyncio.TimerHandle | None = None
        """Wakes the idle loop to delete confirmed rows no claim deleted (_batch_done)."""
        self._deleted_since_vacuum = 0
        self._vacuum: asyncio.Task[None] | None = None
        self._may_vacuum = True
        """False once the role turned out not to own the outbox (nor, on PostgreSQL 17+,
        to hold MAINTAIN on it)."""
        self._broken: BaseException | None = None
        self._next_rebalance = 0.0
        self._next_status = 0.0
        self._trace = trace
        """Log every published event (``LOG_LEVEL=DEBUG``)."""
        self.ready = asyncio.Event()
        """Set once the relay owns partitions and is connected (for tests and /ready)."""

    # --- lifecycle -----------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Relay until ``stop`` is set, then drain in-flight confirms and close."""
        backoff = _Backoff(0.2, 10.0)
        try:
            while not stop.is_set():
                try:
                    await self._connect()
                    backoff.reset()
                    await self._loop(stop)
                except Exception as exc:
                    self.ready.clear()
                    metrics.BROKER_UP.labels(self.database).set(0)
                    expected = isinstance(exc, (*DB_ERRORS, PublisherUnavailable))
                    log.warning(
                        "relay_interrupted",
                        database=self.database,
                        error=str(exc),
                        error_type=type(exc).__name__,
                        exc_info=not expected,
                    )
                    await self._drain()
                    self._leases.lost()
                    await self._publisher.close()
                    await _sleep_or_stop(stop, backoff.next())
        finally:
            await self._drain()
            await self._close()
            if self._flush_timer is not None:
                self._flush_timer.cancel()
                self._flush_timer = None

    async def _connect(self) -> None:
        await self._queue.connect()
        # The broker before the leases: joining halves the other copies' share, so a copy
        # whose broker connect hangs (up to CONNECT_TIMEOUT_S per node) would make them
        # release partitions that it never takes; those would wait for nobody.
        await self._publisher.connect()
        if not self._leases.alive:
            await self._leases.open(self._wake.set)
        metrics.BROKER_UP.labels(self.database).set(1)
        self._next_rebalance = 0.0
        log.info("relay_connected", database=self.database)

    async def _close(self) -> None:
        await self._leases.close()
        await self._publisher.close()
        await self._queue.close()

    # --- the loop --------------------------------------------------------------------------
    async def _loop(self, stop: asyncio.Event) -> None:
        try:
            await self._claim_and_publish(stop)
        finally:
            if self._vacuum is not None:
                self._vacuum.cancel()
                with contextlib.suppress(asyncio.CancelledError, *DB_ERRORS):
                    await self._vacuum
                self._vacuum = None

    async def _claim_and_publish(self, stop: asyncio.Event) -> None:
        poll = self._settings.poll_min_s
        while not stop.is_set():
            if self._broken is not None:
                broken, self._broken = self._broken, None
                raise broken
            await self._maintain()
            room = self._room()
            if room <= 0:
                await asyncio.wait(self._in_flight, return_when=asyncio.FIRST_COMPLETED)
                continue
            self._wake.clear()
            rows, full = await self._claim(room)
            if rows:
                poll = self._settings.poll_min_s
                self._dispatch(rows)
            if full or (rows and self._wake.is_set()):
                continue  # more may wait, or something committed during the claim
            # Fewer rows than asked and no notification since the claim began: nothing is
            # known to wait. Claiming again at once after a claim that got rows found nothing
            # three times in four under a trickle and doubled the claims (each a statement
            # planned for its parameters on PostgreSQL); the next notification or the
            # shortest poll comes instead.
            # So sleep until a commit notifies us, a batch fails, confirmed rows wait to be
            # deleted (see _batch_done) or the poll interval runs out. The
            # interval grows only while polls find nothing and nothing wakes the relay: a
            # notification means commits are happening, and others may be committing beside
            # the notifier without a notification of their own (one notifier at a time, see
            # outbox.schema.NOTIFIER_LOCK), so their rows are looked for again within the
            # shortest interval, not the grown one (rows left to a poll waited up to 98 ms
            # at 1,000 commits/s).
            if await self._idle(stop, poll):
                poll = self._settings.poll_min_s
            else:
                poll = min(poll * 2, self._settings.poll_max_s)

    async def _idle(self, stop: asyncio.Event, wait_s: float) -> bool:
        """Wait up to ``wait_s``; True when woken (a notification, a failed batch, confirmed
        rows to delete, an aggregate's waiting rows all sent)."""
        # A failed batch sets the wake event too, and confirmed rows left undeleted do
        # after the shortest poll (see _batch_done).
        waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waiters, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        return self._wake.is_set()

    def _room(self) -> int:
        """Rows that may be claimed now: a batch, less what exceeds the in-flight budget."""
        s = self._settings
        budget = s.batch_size * s.max_batches_in_flight - self._rows_in_flight
        return min(s.batch_size, budget)

    async def _claim(self, limit: int) -> tuple[list[OutboxRow], bool]:
        """The claimed rows, and whether the claim got all it asked for (more may wait)."""
        owned = sorted(self._leases.owned)
        if not owned:
            return [], False
        in_flight = [row_id for ids in self._in_flight.values() for row_id in ids]
        in_flight.extend(row.id for behind in self._waiting.values() for row in behind)
        confirmed = list(self._confirmed)
        in_flight.extend(confirmed)
        self._let_go.clear()
        # The rows confirmed since the last claim are deleted by the claim itself: one
        # statement, one round trip and one wake-up of PostgreSQL instead of two.
        busy = [key for key, behind in self._waiting.items() if behind]
        rows = await self._queue.claim(owned, in_flight, limit, delete=confirmed, busy=busy)
        full = len(rows) >= limit
        self._deleted(confirmed)
        if self._let_go:
            # A rejection was written while this claim ran: the claim may not have seen it
            # and returned rows that must wait for the retry. The next claim sees it.
            let_go = self._let_go
            rows = [row for row in rows if (row.aggregate_type, row.aggregate_id) not in let_go]
        return rows, full

    async def _maintain(self) -> None:
        """Rebalance partitions and refresh gauges, each on its own period."""
        now = time.monotonic()
        if now >= self._next_rebalance:
            self._next_rebalance = now + self._settings.rebalance_s
            share = await self._leases.share()
            if len(self._leases.owned) > share:
                await self._drain()  # a partition changes hands only with nothing in flight
                await self._leases.release_down_to(share)
            elif len(self._leases.owned) < share:
                await self._leases.acquire_up_to(share)
            metrics.OWNED_PARTITIONS.labels(self.database).set(len(self._leases.owned))
            if self._leases.owned:
                self.ready.set()
        if now >= self._next_status:
            self._next_status = now + 5.0
            status = await self._queue.status()
            metrics.BACKLOG.labels(self.database).set(status.backlog)
            metrics.PARKED_NOW.labels(self.database).set(status.parked)
            metrics.OLDEST_AGE.labels(self.database).set(status.oldest_age_s or 0.0)

    # --- batches --------------------------------------------------------------------------
    def _dispatch(self, rows: list[OutboxRow]) -> None:
        """Publish the claimed rows whose aggregate has no row out; the others wait for it."""
        send = []
        waiting = self._waiting
        for row in rows:
            key = (row.aggregate_type, row.aggregate_id)
            behind = waiting.get(key)
            if behind is None:
                waiting[key] = deque()
                send.append(row)
            else:
                behind.append(row)
        self._waiting_rows += len(rows) - len(send)
        self._rows_in_flight += len(rows)
        if send:
            self._start_batch(send)

    def _send_next(self, confirmed: list[OutboxRow]) -> None:
        """The confirmed rows' aggregates are free: send each one's next waiting row now,
        not with the next claim (a saga's several events would each wait for a claim)."""
        if not self._sending or self._broken is not None:
            return  # the drain lets every waiting row go
        send = []
        waiting = self._waiting
        for row in confirmed:
            key = (row.aggregate_type, row.aggregate_id)
            behind = waiting.get(key)
            if behind:
                send.append(behind.popleft())
                if not behind:
                    # Claims skip an aggregate while rows of it wait (see _claim): claim its
                    # next rows now, while this one is out, not at the next poll.
                    self._wake.set()
            else:
                waiting.pop(key, None)
        if send:
            self._waiting_rows -= len(send)
            self._start_batch(send)

    def _let_waiting_go(self, rejected: Iterable[OutboxRow]) -> None:
        """Drop the rows waiting behind rejected rows (their failure is written: claims skip
        them until the retry), freeing their aggregates."""
        for row in rejected:
            key = (row.aggregate_type, row.aggregate_id)
            behind = self._waiting.pop(key, None)
            self._let_go.add(key)
            if behind:
                self._waiting_rows -= len(behind)
                self._rows_in_flight -= len(behind)

    def _start_batch(self, rows: list[OutboxRow]) -> None:
        """Publish rows already counted in ``_rows_in_flight``."""
        task = asyncio.create_task(self._publish_batch(rows))
        self._in_flight[task] = [row.id for row in rows]
        task.add_done_callback(self._batch_done)

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._rows_in_flight -= len(self._in_flight.pop(task, ()))
        exc = None if task.cancelled() else task.exception()
        if exc is not None and self._broken is None:
            self._broken = exc
        if exc is not None:
            self._wake.set()
        elif self._in_flight or not self._confirmed:
            return  # while other batches are out, the next claim comes anyway
        elif len(self._confirmed) >= DELETE_AT_ONCE:
            self._wake.set()  # the end of a burst: delete it now
        elif self._flush_timer is None:
            # A few confirmed rows are deleted by the next claim. Under a steady trickle a
            # notification brings one within milliseconds; a claim at once for every batch
            # that left the pipeline empty (most of them at 500 commits/s) found nothing
            # and doubled the claims. Only when none comes within the shortest poll does
            # the loop wake to delete (a poll grown while idle would leave them longer).
            self._flush_timer = asyncio.get_running_loop().call_later(
                self._settings.poll_min_s, self._flush_due
            )

    def _flush_due(self) -> None:
        self._flush_timer = None
        if self._confirmed:
            self._wake.set()

    async def _publish_batch(self, rows: list[OutboxRow]) -> None:
        origins = (row.traceparent for row in rows)  # read only when tracing is on
        with tracing.publishing(self.database, EVENTS_EXCHANGE, origins, len(rows)):
            outcomes = await self._publisher.publish(rows)
        confirmed_at = datetime.now(UTC)
        sent = [row for row, outcome in zip(rows, outcomes, strict=True) if outcome is None]
        failed = [(row, outcome) for row, outcome in zip(rows, outcomes, strict=True) if outcome]
        if sent:
            # Deleted by the next claim (the batch's end wakes the loop), many batches per
            # statement: the publishing slot is free as soon as the broker has confirmed.
            self._confirmed.update(row.id for row in sent)
            self._send_next(sent)
            metrics.PUBLISHED.labels(self.database).inc(len(sent))
            hist = metrics.LATENCY.labels(self.database)
            for row in sent:
                hist.observe((confirmed_at - row.created_at).total_seconds())
            self._log_sent(sent, confirmed_at)
        if failed:
            await self._record_failures(failed)
            self._let_waiting_go(row for row, _ in failed)

    def _log_sent(self, sent: list[OutboxRow], confirmed_at: datetime) -> None:
        """One line per event while traffic is light (a request can be followed by its
        correlation id at the default level); one line per batch under load, where per-event
        lines would cost throughput (they come back with LOG_LEVEL=DEBUG)."""
        if len(sent) > LOG_EACH_EVENT_MAX and not self._trace:
            oldest = min(row.created_at for row in sent)
            log.info(
                "outbox_batch_published", database=self.database, count=len(sent),
                first_event_id=str(sent[0].event_id), last_event_id=str(sent[-1].event_id),
                max_latency_ms=round((confirmed_at - oldest).total_seconds() * 1000, 1),
            )
            return
        emit = log.debug if len(sent) > LOG_EACH_EVENT_MAX else log.info
        for row in sent:
            emit(
                "outbox_published", database=self.database, event_id=str(row.event_id),
                event_type=row.event_type, correlation_id=row.correlation_id,
                trace_id=tracing.trace_id_of(row.traceparent),
            )

    async def _record_failures(self, failed: Sequence[tuple[OutboxRow, RejectedByBroker]]) -> None:
        s = self._settings
        failures = [
            Failure(
                row.id,
                str(err),
                min(s.backoff_base_s * 2**row.attempts, s.backoff_max_s),
            )
            for row, err in failed
        ]
        await self._retry_db(self._queue.record_failures, failures, s.max_attempts)
        metrics.FAILED.labels(self.database).inc(len(failed))
        for row, err in failed:
            parked = row.attempts + 1 >= s.max_attempts
            if parked:
                metrics.PARKED.labels(self.database).inc()
            log.warning(
                "outbox_publish_rejected",
                database=self.database,
                event_id=str(row.event_id),
                event_type=row.event_type,
                attempts=row.attempts + 1,
                parked=parked,
                error=str(err),
            )

    async def _retry_db(self, func: Callable[..., Awaitable[None]], *args: object) -> None:
        """Run a write, retrying briefly: the broker already has the messages."""
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(DB_ERRORS),
            wait=wait_exponential(multiplier=0.1, max=2),
            stop=stop_after_attempt(5),
            reraise=True,
        ):
            with attempt:
                await func(*args)

    async def _flush_confirmed(self) -> None:
        """Delete the confirmed rows now (claims delete them otherwise; see _claim)."""
        ids = list(self._confirmed)
        if ids:
            await self._retry_db(self._queue.delete_sent, ids)
            self._deleted(ids)

    def _deleted(self, ids: list[int]) -> None:
        if not ids:
            return
        self._confirmed.difference_update(ids)
        self._deleted_since_vacuum += len(ids)
        every = self._settings.vacuum_every
        if (
            every
            and self._may_vacuum
            and self._deleted_since_vacuum >= every
            and 0 in self._leases.owned
            and self._vacuum is None
        ):
            self._deleted_since_vacuum = 0
            self._vacuum = asyncio.create_task(self._vacuum_outbox())

    async def _vacuum_outbox(self) -> None:
        """Keep the queue table lean: dead rows at the head of the id index slow each claim.

        One relay does it (the owner of partition 0), in the background on the pool;
        VACUUM takes no lock that blocks the writers or the claims."""
        started = time.monotonic()
        try:
            if not await self._queue.vacuum():
                # A least-privilege role (docs/deployment.md, "Database roles") does not own
                # the table: VACUUM would only warn and skip it. Autovacuum keeps it lean.
                self._may_vacuum = False
                log.info("outbox_vacuum_skipped", database=self.database,
                         reason="the relay's role may not vacuum the outbox; autovacuum does")
                return
        except DB_ERRORS as exc:
            log.warning("outbox_vacuum_failed", database=self.database, error=str(exc))
            return
        finally:
            self._vacuum = None
        log.info(
            "outbox_vacuumed", database=self.database, seconds=round(time.monotonic() - started, 3)
        )

    async def _drain(self) -> None:
        """Wait for every in-flight batch, let the waiting rows go (claims find them again, in
        order), then delete what the broker confirmed."""
        self._sending = False
        try:
            while self._in_flight:
                await asyncio.wait(list(self._in_flight))
        finally:
            self._sending = True
        self._rows_in_flight -= self._waiting_rows
        self._waiting.clear()
        self._waiting_rows = 0
        with contextlib.suppress(*DB_ERRORS):
            await self._flush_confirmed()


class _Backoff:
    def __init__(self, first: float, cap: float) -> None:
        self.first, self.cap, self.current = first, cap, first

    def reset(self) -> None:
        self.current = self.first

    def next(self) -> float:
        value, self.current = self.current, min(self.current * 2, self.cap)
        return value


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
