"""OCR in separate processes, one job per process at a time, each bounded in memory and time.

Recognition is CPU-bound for seconds; in the worker's own process it would starve the
event loop and the AMQP heartbeats. The pool is ``workers`` slots, each one OCR process
and a pipe to it; a process builds its engine once (on its first job) and keeps it.

Bounds, so that one hostile document costs only itself:

- memory: each OCR process (and the tesseract it runs) lives under ``RLIMIT_DATA`` =
  ``OCR_MEMORY_LIMIT_MB``. A document that needs more fails for good with that reason
  (a PDF whose content stream inflates to hundreds of megabytes, say); freed memory is
  handed back to the system after every job (``malloc_trim``);
- time: a job that overruns ``OCR_TIMEOUT_S`` kills *its* process only; the jobs running
  in the other slots go on, and the slot starts a fresh process on its next job;
- crashes: a process that dies on a document (a signal, the kernel's OOM killer) is
  replaced; the job is retried once (:class:`OcrCrashed`) and the document fails for good
  when it kills a process again (``workers.ocr``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import multiprocessing
import os
import resource
import signal
import threading
from multiprocessing.connection import Connection
from typing import Any, Protocol

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


class OcrOutOfMemory(ValidationFailed):
    """OCR of one document needed more than ``OCR_MEMORY_LIMIT_MB``: the document fails."""


class OcrCrashed(TransientError):
    """The OCR process died during this document (retried once, then the document fails)."""


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


def _init_process(config: EngineConfig, threads: int, memory_bytes: int) -> None:
    # Several processes on few cores: torch's default of one thread per core oversubscribes.
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    if memory_bytes > 0:  # inherited by the tesseract processes it starts
        resource.setrlimit(resource.RLIMIT_DATA, (memory_bytes, memory_bytes))
    if config.engine != "easyocr":
        return  # torch alone takes half a gigabyte: only the engine that needs it loads it
    try:
        import torch  # noqa: PLC0415

        torch.set_num_threads(threads)
    except ImportError:  # tesseract-only installs
        pass


def ocr_document(config: EngineConfig, limits: Limits, content: bytes) -> list[PageLayout]:
    """The structure of every page, read or recognised (runs inside an OCR process)."""
    return list(read_pages(content, limits, _engine(config)))


def warm_up(config: EngineConfig) -> str:
    """Load the engine in an OCR process (start-up check; surfaces missing models early)."""
    return _engine(config).name


def peak_rss_kib() -> int:
    """This process's peak resident memory (``VmHWM``), in KiB."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def _trim() -> None:
    """Hand freed heap back to the system (a big document's pages stay freed, not kept)."""
    name = ctypes.util.find_library("c")
    if name:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(name).malloc_trim(0)


def _serve(conn: Connection, config: EngineConfig, threads: int, memory_bytes: int) -> None:
    """Main loop of an OCR process: one job at a time from the pipe, one reply each."""
    _init_process(config, threads, memory_bytes)
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        try:
            if job[0] == "warm":
                reply: tuple[Any, ...] = ("ok", warm_up(config))
            else:
                reply = ("ok", ocr_document(config, job[1], job[2]))
        except MemoryError:
            reply = ("memory", peak_rss_kib())
        except Exception as exc:  # sent to the parent, which raises it
            reply = ("raise", exc)
        _trim()
        try:
            conn.send((*reply, peak_rss_kib()))
        except Exception as exc:  # e.g. an exception that does not pickle
            conn.send(("raise", TransientError(f"{type(exc).__name__}: {exc}"), 0))
        if reply[0] == "memory":
            return  # a process that ran out of memory is not trusted with the next job


START_TIMEOUT_S = 300.0
"""Longest start of an OCR process with its engine (easyocr loads its models)."""


class _Slot:
    """One OCR process and the pipe to it; one job at a time (the pool lends slots out)."""

    def __init__(self, config: EngineConfig, threads: int, memory_bytes: int) -> None:
        self._config, self._threads, self._memory = config, threads, memory_bytes
        self._process: Any = None
        self._conn: Connection | None = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return None if self._process is None else int(self._process.pid)

    def _start(self) -> Connection:
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        process = context.Process(
            target=_serve, args=(child, self._config, self._threads, self._memory),
            name="ocr", daemon=True,
        )
        process.start()
        child.close()
        self._process, self._conn = process, parent
        return parent

    def call(self, job: tuple[Any, ...], timeout_s: float) -> tuple[Any, ...]:
        """Send one job and wait for its reply (blocking: runs in a thread). A slot without
        a live process starts one and loads its engine first, under ``START_TIMEOUT_S``:
        ``timeout_s`` bounds the job alone."""
        with self._lock:
            if not self._alive():
                started = self._exchange(self._start(), ("warm",), START_TIMEOUT_S)
                if job[0] == "warm" or started[0] != "ok":
                    return started
            assert self._conn is not None
            return self._exchange(self._conn, job, timeout_s)

    def _exchange(self, conn: Connection, job: tuple[Any, ...], timeout_s: float
                  ) -> tuple[Any, ...]:
        try:
            conn.send(job)
            if not conn.poll(timeout_s):
                self.kill()
                raise OcrTimeout(f"OCR took longer than {timeout_s:g}s (OCR_TIMEOUT_S)")
            return tuple(conn.recv())
        except (EOFError, OSError) as exc:
            code = None
            if self._process is not None:
                self._process.join(2)
                code = self._process.exitcode
            self.kill()
            how = f"killed by {signal.Signals(-code).name}" if code and code < 0 else f"exit {code}"
            raise OcrCrashed(
                f"the OCR process died ({how}): out of memory (OCR_MEMORY_LIMIT_MB) or a crash"
            ) from exc

    def _alive(self) -> bool:
        return self._process is not None and self._process.is_alive() and self._conn is not None

    def kill(self) -> None:
        process, conn, self._process, self._conn = self._process, self._conn, None, None
        if conn is not None:
            conn.close()
        if process is not None:
            process.kill()
            process.join(5)


class ProcessOcrRunner:
    """Real adapter: ``workers`` OCR processes (spawned), each bounded in memory and time."""

    def __init__(self, config: EngineConfig, limits: Limits, *, workers: int, timeout_s: float,
                 memory_limit_mb: int = 0) -> None:
        self.engine_name = config.engine
        self._config, self._limits = config, limits
        self._timeout_s, self._memory_mb = timeout_s, memory_limit_mb
        count = max(1, workers)
        threads = max(1, (os.cpu_count() or 1) // count)
        self._slots = [_Slot(config, threads, memory_limit_mb * 1024 * 1024)
                       for _ in range(count)]
        self._free: asyncio.Queue[_Slot] | None = None
        self.last_peak_rss_kib = 0
        """Peak resident memory of the OCR process that ran the last job (KiB)."""

    def _queue(self) -> asyncio.Queue[_Slot]:
        if self._free is None:
            self._free = asyncio.Queue()
            for slot in self._slots:
                self._free.put_nowait(slot)
        return self._free

    @property
    def pids(self) -> list[int]:
        """Process ids of the running OCR processes (tests measure their memory)."""
        return [pid for slot in self._slots if (pid := slot.pid) is not None]

    async def warm_up(self) -> None:
        """Start every process and load the model now rather than on the first document."""
        await asyncio.gather(*(self._call(("warm",)) for _ in self._slots))

    async def run(self, content: bytes) -> list[PageLayout]:
        pages: list[PageLayout] = await self._call(("ocr", self._limits, content))
        return pages

    async def _call(self, job: tuple[Any, ...]) -> Any:
        free = self._queue()
        slot = await free.get()
        try:
            kind, value, peak = await asyncio.to_thread(slot.call, job, self._timeout_s)
        finally:
            free.put_nowait(slot)
        self.last_peak_rss_kib = int(peak)
        if kind == "ok":
            return value
        if kind == "memory":
            raise OcrOutOfMemory(
                f"the document needs more memory than OCR_MEMORY_LIMIT_MB={self._memory_mb} "
                "allows for one OCR process"
            )
        if isinstance(value, BaseException):
            raise value
        raise TransientError(f"unexpected reply from the OCR process: {kind!r}")

    async def close(self) -> None:
        for slot in self._slots:
            await asyncio.to_thread(slot.kill)
