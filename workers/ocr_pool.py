"""OCR in a pool of separate processes, with a per-job timeout.

Recognition is CPU-bound for seconds; in the worker's own process it would starve the
event loop and the AMQP heartbeats. Each pool process builds its engine once (on its
first job) and keeps it. A job that overruns its timeout cannot be interrupted inside
a process, so the pool's processes are killed and the pool is rebuilt lazily.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Protocol

from shared.documents import Limits
from shared.errors import TransientError, ValidationFailed
from shared.layout import PageLayout
from shared.logging import get_logger
from workers.ocr_engines import EngineConfig, OcrEngine, build_engine
from workers.pages import read_pages

log = get_logger(__name__)

_ENGINE: OcrEngine | None = None
"""The engine of this OCR process, built on first use and kept for its life."""


class OcrTimeout(ValidationFailed):
    """OCR of one document took longer than ``OCR_TIMEOUT_S``: the document fails."""


class OcrRunner(Protocol):
    """Port of the OCR worker: bytes in, pages out (or an error telling what to do)."""

    engine_name: str

    async def run(self, content: bytes) -> list[PageLayout]: ...

    async def close(self) -> None: ...


def _engine(config: EngineConfig) -> OcrEngine:
    global _ENGINE  # noqa: PLW0603 - one model per process, by design
    if _ENGINE is None:
        _ENGINE = build_engine(config)
    return _ENGINE


def _init_process(threads: int) -> None:
    # Several processes on few cores: torch's default of one thread per core oversubscribes.
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    try:
        import torch  # noqa: PLC0415

        torch.set_num_threads(threads)
    except ImportError:  # tesseract-only installs
        pass


def ocr_document(config: EngineConfig, limits: Limits, content: bytes) -> list[PageLayout]:
    """The structure of every page, read or recognised (runs inside an OCR process)."""
    return list(read_pages(content, limits, _engine(config)))


def warm_up(config: EngineConfig) -> str:
    """Load the engine in a pool process (start-up check; surfaces missing models early)."""
    return _engine(config).name


class ProcessOcrRunner:
    """Real adapter: a spawn-started ``ProcessPoolExecutor`` of ``workers`` processes."""

    def __init__(self, config: EngineConfig, limits: Limits, *, workers: int, timeout_s: float):
        self.engine_name = config.engine
        self._config, self._limits = config, limits
        self._workers, self._timeout_s = max(1, workers), timeout_s
        self._pool: ProcessPoolExecutor | None = None

    def _ensure_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            threads = max(1, (os.cpu_count() or 1) // self._workers)
            self._pool = ProcessPoolExecutor(
                max_workers=self._workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_process,
                initargs=(threads,),
            )
        return self._pool

    async def warm_up(self) -> None:
        """Load the model in every process now rather than on the first document."""
        loop = asyncio.get_running_loop()
        pool = self._ensure_pool()
        await asyncio.gather(
            *(loop.run_in_executor(pool, warm_up, self._config) for _ in range(self._workers))
        )

    async def run(self, content: bytes) -> list[PageLayout]:
        loop = asyncio.get_running_loop()
        pool = self._ensure_pool()
        future = loop.run_in_executor(pool, ocr_document, self._config, self._limits, content)
        try:
            return await asyncio.wait_for(future, self._timeout_s)
        except TimeoutError:
            log.warning("ocr_timeout", timeout_s=self._timeout_s)
            self._kill()
            raise OcrTimeout(f"OCR took longer than {self._timeout_s:g}s (OCR_TIMEOUT_S)") from None
        except BrokenProcessPool as exc:
            # A process died (out of memory, killed): retry later on a fresh pool.
            self._kill()
            raise TransientError(f"OCR process died: {exc}") from exc

    def _kill(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        processes = getattr(pool, "_processes", None) or {}
        for process in list(processes.values()):
            process.kill()
        pool.shutdown(wait=False, cancel_futures=True)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)
