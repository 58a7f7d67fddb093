"""One process per partition: ``python -m workers NAME`` with ``WORKER_PARTITIONS`` > 1.

One process handles what one core can (the consumer runtime is CPU-bound in Python). A
partitioned consumer has one work queue per partition, and the broker's headers
exchange sends every aggregate (by its slot) to one of them, always the same one
(:mod:`shared.topology`). The supervisor here starts ``python -m workers NAME
--partition I`` for every partition, restarts a process that dies (with backoff; the
broker hands its unacknowledged messages out again, and the inbox drops what was applied
already), and passes SIGTERM on, so each partition stops taking messages and finishes the
ones in flight.

The partition processes write their Prometheus metrics to a shared directory
(``prometheus_client`` multiprocess mode); the supervisor serves the sum of them on
``WORKER_METRICS_PORT``, so a partitioned consumer is scraped at one port as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile

from shared.config import WorkerSettings
from shared.logging import get_logger

log = get_logger(__name__)

EXIT_CANNOT_START = 3
"""A partition refused to start (configuration, missing models): no use restarting it."""

RESTART_MIN_S = 1.0
RESTART_MAX_S = 30.0
STABLE_S = 60.0
"""A partition that ran this long before it died starts its backoff over (RESTART_MIN_S)."""

KILL_AFTER_S = 10.0
"""Past the shutdown timeout, how long a partition may take before it is killed."""


def partition_command(name: str, partition: int) -> list[str]:
    return [sys.executable, "-m", "workers", name, "--partition", str(partition)]


class Supervisor:
    """Keeps one process per partition of consumer ``name`` running until stopped."""

    def __init__(self, name: str, partitions: int, settings: WorkerSettings) -> None:
        self.name = name
        self.partitions = partitions
        self.settings = settings
        self._stop = asyncio.Event()
        self._fatal: int | None = None
        self._processes: dict[int, asyncio.subprocess.Process] = {}
        self._metrics_dir: str | None = None

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT (or a partition refuses to start); the exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        env = self._environment()
        try:
            keepers = [
                asyncio.create_task(self._keep(i, env)) for i in range(self.partitions)
            ]
            log.info("partitions_started", consumer=self.name, partitions=self.partitions)
            await self._stop.wait()
            log.info("partitions_stopping", consumer=self.name)
            await self._terminate_all()
            await asyncio.gather(*keepers)
        finally:
            if self._metrics_dir is not None:
                shutil.rmtree(self._metrics_dir, ignore_errors=True)
        return self._fatal or 0

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        port = self.settings.metrics_port
        if port:
            self._metrics_dir = tempfile.mkdtemp(prefix=f"ams-{self.name}-metrics-")
            env["PROMETHEUS_MULTIPROC_DIR"] = self._metrics_dir
            env["WORKER_METRICS_PORT"] = "0"  # the partitions write files; we serve them
            _serve_multiprocess_metrics(port, self._metrics_dir)
        return env

    async def _keep(self, partition: int, env: dict[str, str]) -> None:
        loop = asyncio.get_running_loop()
        delay = RESTART_MIN_S
        while not self._stop.is_set():
            process = await asyncio.create_subprocess_exec(
                *partition_command(self.name, partition), env=env, stdin=asyncio.subprocess.DEVNULL
            )
            self._processes[partition] = process
            started = loop.time()
            code = await process.wait()
            self._mark_dead(process.pid)
            if self._stop.is_set():
                return
            if code == EXIT_CANNOT_START:
                log.error("partition_cannot_start", consumer=self.name, partition=partition)
                self._fatal = EXIT_CANNOT_START
                self._stop.set()
                return
            if loop.time() - started >= STABLE_S:
                delay = RESTART_MIN_S
            log.error(
                "partition_died", consumer=self.name, partition=partition, exit_code=code,
                restart_in=delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            delay = min(delay * 2, RESTART_MAX_S)

    async def _terminate_all(self) -> None:
        running = [p for p in self._processes.values() if p.returncode is None]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        limit = self.settings.shutdown_timeout_s + KILL_AFTER_S
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in running)), limit)
        except TimeoutError:
            for process in running:
                if process.returncode is None:
                    log.warning("partition_killed", consumer=self.name, pid=process.pid)
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
            await asyncio.gather(*(p.wait() for p in running))

    def _mark_dead(self, pid: int) -> None:
        if self._metrics_dir is not None:
            from prometheus_client import multiprocess  # noqa: PLC0415

            multiprocess.mark_process_dead(pid, self._metrics_dir)  # type: ignore[no-untyped-call]


def _serve_multiprocess_metrics(port: int, directory: str) -> None:
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server  # noqa: PLC0415

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    start_http_server(port, registry=registry)


def supervise(name: str, partitions: int, settings: WorkerSettings) -> int:
    return asyncio.run(Supervisor(name, partitions, settings).run())


__all__ = ["Supervisor", "partition_command", "supervise"]
