"""Group messages that are ready at the same time into one database transaction.

A commit per message caps a consumer at the commit rate of its connections; under load,
messages of different aggregates that wait for a connection are applied together: one
transaction, one inbox statement for all of them, every effect, one commit. Each
message's inbox row still commits together with its own effect. At most
``max_concurrency`` batches run at once (the pool size), so batches grow with the load
and stay at one message when the consumer is idle.
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

    async def submit(self, item: T) -> None:
        """Queue ``item`` and return once the batch it ran in has finished."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._start_batches()
        await future

    def _start_batches(self) -> None:
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
            raise
        for _, future in batch:
            if not future.done():
                future.set_result(None)
