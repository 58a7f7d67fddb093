"""Group messages that are ready at the same time into one database transaction.

A commit per message caps a consumer at the commit rate of its connections; under load,
messages of different aggregates that wait for a connection are applied together: one
transaction, one inbox statement for all of them, every effect, one commit. Each
message's inbox row still commits together with its own effect. At most
``max_concurrency`` batches run at once, so batches grow with the load and stay at one
message when the consumer is idle (classic group commit: a batch starts when a slot is
free, and takes everything that queued up while the previous ones ran).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Batcher(Generic[T]):
    def __init__(
        self,
        run_batch: Callable[[list[T]], Awaitable[None]],
        *,
        max_batch: int,
        max_concurrency: int,
    ) -> None:
        self._run_batch = run_batch
        self._max_batch = max(1, max_batch)
        self._max_concurrency = max(1, max_concurrency)
        self._pending: list[tuple[T, asyncio.Future[None]]] = []
        self._active: set[asyncio.Task[None]] = set()
        self._scheduled = False

    async def submit(self, item: T) -> None:
        """Queue ``item`` and return once the batch it ran in has finished."""
        await self.enqueue(item)

    def enqueue(self, item: T) -> asyncio.Future[None]:
        """Queue ``item``; the future is done once the batch it ran in has finished.

        Batches start on the next turn of the event loop, so that the deliveries that
        arrived together (one socket read) share a transaction.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._pending.append((item, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._start_batches)
        return future

    def _start_batches(self) -> None:
        self._scheduled = False
        while self._pending and len(self._active) < self._max_concurrency:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            task = asyncio.create_task(self._run(batch))
            self._active.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._active.discard(task)
        self._start_batches()

    async def _run(self, batch: list[tuple[T, asyncio.Future[None]]]) -> None:
        try:
            await self._run_batch([item for item, _ in batch])
        except BaseException as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            for _, future in batch:
                if not future.done():
                    future.set_result(None)
