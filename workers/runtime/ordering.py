"""Run jobs in parallel across keys and strictly in arrival order within one key."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial

from shared.logging import get_logger

log = get_logger(__name__)


class KeyedSerializer:
    """Messages of one aggregate run one after another; different aggregates in parallel.

    ``submit`` must be called in arrival order (it is, from the consumer callback): each
    job waits for the previous job of its key, whatever that one's outcome. A job that
    returns a future (a message queued for a batch) costs no task of its own; a job that
    returns a coroutine runs as a task.
    """

    def __init__(self) -> None:
        self._tails: dict[str, asyncio.Future[None]] = {}
        self._pending: set[asyncio.Future[None]] = set()

    def submit(self, key: str, job: Callable[[], Awaitable[None]]) -> asyncio.Future[None]:
        """Queue ``job`` behind ``key``'s previous job; the future is done when it is."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        previous = self._tails.get(key)
        self._tails[key] = done
        self._pending.add(done)
        done.add_done_callback(partial(self._done, key))
        if previous is None:
            self._start(job, done)
        else:
            previous.add_done_callback(lambda _: self._start(job, done))
        return done

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    async def drain(self, grace_s: float) -> bool:
        """Wait for every submitted job; False if some were still running at the timeout."""
        if not self._pending:
            return True
        _, pending = await asyncio.wait(set(self._pending), timeout=grace_s)
        return not pending

    def _start(self, job: Callable[[], Awaitable[None]], done: asyncio.Future[None]) -> None:
        try:
            running = asyncio.ensure_future(job())
        except Exception:  # a job that fails to start still releases its key
            log.exception("job_failed")
            done.set_result(None)
            return
        running.add_done_callback(partial(_finish, done))

    def _done(self, key: str, done: asyncio.Future[None]) -> None:
        self._pending.discard(done)
        if self._tails.get(key) is done:
            del self._tails[key]


def _finish(done: asyncio.Future[None], running: asyncio.Future[None]) -> None:
    if not running.cancelled() and running.exception() is not None:
        log.error("job_failed", error=repr(running.exception()))
    if not done.done():
        done.set_result(None)
