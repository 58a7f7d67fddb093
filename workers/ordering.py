"""Run jobs in parallel across keys and strictly in arrival order within one key."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


class KeyedSerializer:
    """Messages of one aggregate run one after another; different aggregates in parallel.

    ``submit`` must be called in arrival order (it is, from the consumer callback): each
    job waits for the previous job of its key, whatever that one's outcome.
    """

    def __init__(self) -> None:
        self._tails: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, key: str, job: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        previous = self._tails.get(key)
        task = asyncio.create_task(self._after(previous, job))
        self._tails[key] = task
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._done(key, t))
        return task

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def drain(self, grace_s: float) -> bool:
        """Wait for every submitted job; False if some were still running at the timeout."""
        if not self._tasks:
            return True
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace_s)
        return not pending

    async def _after(
        self, previous: asyncio.Task[None] | None, job: Callable[[], Awaitable[None]]
    ) -> None:
        if previous is not None:
            await asyncio.wait({previous})
        await job()

    def _done(self, key: str, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._tails.get(key) is task:
            del self._tails[key]
