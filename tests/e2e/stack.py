"""Start the APIs, the workers and the relay as processes, as a user would, against isolated
settings (``tests.support.isolated_settings``).

Options for the system tests and ``bench/system.py``:

- ``proxied=True`` puts a :class:`tests.faults.TcpProxy` in front of PostgreSQL, Redis and
  RabbitMQ for every process: cutting one is that service going away for the whole stack,
  without touching the shared services other engineers use.
- ``log_dir``: each process writes stdout+stderr to ``<log_dir>/<name>.log`` (appended across
  restarts) instead of inheriting the test's.
- ``with_admin=True`` adds the admin API and the OCR worker.
- ``with_frontends=True`` adds the portal and the console (and the admin API, the OCR, documents
  and saga workers they need), each on a free port (``Stack.portal_url``, ``console_url``).
- every worker and the relay get a free metrics port (``Stack.metrics_urls``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import aio_pika.abc
import httpx

from shared.config import Settings
from shared.messaging import EVENTS_EXCHANGE
from shared.topology_apply import apply_topology
from tests.faults import TcpProxy
from tests.support import env_for, free_port

ROOT = Path(__file__).resolve().parents[2]
HTTP_PROCESSES = ("auth", "users", "admin", "portal", "console")
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Stack:
    settings: Settings
    """What the processes use (through the proxies when ``proxied``)."""
    direct: Settings
    """The same databases and vhost without proxies: for the test's own checks."""
    auth_url: str
    users_url: str
    admin_url: str | None
    processes: dict[str, subprocess.Popen[bytes]]
    commands: dict[str, list[str]]
    envs: dict[str, dict[str, str]]
    metrics_urls: dict[str, str]
    proxies: dict[str, TcpProxy] = field(default_factory=dict)
    log_dir: Path | None = None
    portal_url: str | None = None
    console_url: str | None = None
    _logs: list[IO[bytes]] = field(default_factory=list)

    def start(self, name: str) -> None:
        out: IO[bytes] | None = None
        if self.log_dir is not None:
            out = (self.log_dir / f"{name}.log").open("ab")
            self._logs.append(out)
        self.processes[name] = subprocess.Popen(
            self.commands[name], cwd=ROOT, env=self.envs[name], stdout=out,
            stderr=subprocess.STDOUT if out is not None else None,
        )

    def kill9(self, name: str) -> None:
        """``kill -9``: no shutdown code runs."""
        proc = self.processes[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def restart(self, name: str) -> None:
        if self.processes[name].poll() is None:
            self.kill9(name)
        self.start(name)

    def log_text(self, name: str) -> str:
        assert self.log_dir is not None, "start the stack with log_dir"
        return (self.log_dir / f"{name}.log").read_text(errors="replace")

    def rss_kib(self, name: str) -> int:
        """Resident memory of the process (``VmRSS`` of /proc/<pid>/status)."""
        status = Path(f"/proc/{self.processes[name].pid}/status").read_text()
        line = next(ln for ln in status.splitlines() if ln.startswith("VmRSS:"))
        return int(line.split()[1])

    def cpu_s(self, name: str) -> float:
        """User + system CPU seconds of the process and its descendants (an OCR pool's
        processes, the tesseract runs they waited for)."""
        return sum(_cpu_of(pid) for pid in _tree(self.processes[name].pid))

    def stop(self) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.processes.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for out in self._logs:
            out.close()


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                todo += [int(p) for p in task.read_text().split()]
            except OSError:
                continue
    return pids


def _cpu_of(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0  # exited meanwhile
    values = stat.rsplit(")", 1)[1].split()
    # utime, stime, cutime, cstime are fields 14-17 of stat(5); values[0] is field 3
    return sum(int(v) for v in values[11:15]) / CLK_TCK


def via(url: str, proxy: TcpProxy) -> str:
    """``url`` with its host:port replaced by the proxy's."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{proxy.port}" if userinfo else f"127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _target(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


@contextmanager
def running_stack(
    settings: Settings,
    *,
    log_level: str = "WARNING",
    proxied: bool = False,
    log_dir: Path | None = None,
    with_admin: bool = False,
    with_frontends: bool = False,
    env: dict[str, str] | None = None,
) -> Iterator[Stack]:
    with ExitStack() as exits:
        direct = settings
        proxies: dict[str, TcpProxy] = {}
        if proxied:
            proxies = {
                "postgres": TcpProxy(*_target(settings.database.auth_url, 5432)),
                "redis": TcpProxy(*_target(settings.redis.url, 6379)),
                "rabbitmq": TcpProxy(*_target(settings.broker.url, 5672)),
            }
            for proxy in proxies.values():
                exits.enter_context(proxy)
            settings = settings.replace(
                auth_database_url=via(settings.database.auth_url, proxies["postgres"]),
                users_database_url=via(settings.database.users_url, proxies["postgres"]),
                admin_database_url=via(settings.database.admin_url, proxies["postgres"]),
                redis_url=via(settings.redis.url, proxies["redis"]),
                rabbitmq_url=via(settings.broker.url, proxies["rabbitmq"]),
            )
        with_admin = with_admin or with_frontends
        ports = {name: free_port() for name in ("auth", "users", "admin", "portal", "console")}
        settings = settings.replace(
            auth_port=ports["auth"],
            users_port=ports["users"],
            admin_port=ports["admin"],
            log_level=log_level,
            auth_jwks_url=f"http://127.0.0.1:{ports['auth']}/.well-known/jwks.json",
            worker_metrics_port=0,
            relay_metrics_port=0,
            portal_port=ports["portal"],
            console_port=ports["console"],
            auth_api_url=f"http://127.0.0.1:{ports['auth']}",
            users_api_url=f"http://127.0.0.1:{ports['users']}",
            admin_api_url=f"http://127.0.0.1:{ports['admin']}",
        )
        asyncio.run(apply_topology(direct))
        commands = {
            "auth": [sys.executable, "-m", "apps.auth"],
            "users": [sys.executable, "-m", "apps.users"],
            "profiles": [sys.executable, "-m", "workers", "profiles"],
            "relay": [sys.executable, "-m", "outbox"],  # all three databases
        }
        if with_admin:
            commands["admin"] = [sys.executable, "-m", "apps.admin"]
            commands["ocr"] = [sys.executable, "-m", "workers", "ocr"]
        if with_frontends:
            commands["documents"] = [sys.executable, "-m", "workers", "documents"]
            commands["saga"] = [sys.executable, "-m", "workers", "saga"]
            commands["portal"] = [sys.executable, "-m", "frontends.portal"]
            commands["console"] = [sys.executable, "-m", "frontends.console"]
        # migrate's administrator URL is for migrate alone: no running process gets it.
        base = env_for(settings, **{"MIGRATE_DATABASE_URL": "", **(env or {})})
        envs: dict[str, dict[str, str]] = {}
        metrics_urls: dict[str, str] = {}
        for name in commands:
            envs[name] = dict(base)
            if name in HTTP_PROCESSES:
                metrics_urls[name] = f"http://127.0.0.1:{ports[name]}/metrics"
                continue
            port = free_port()
            key = "RELAY_METRICS_PORT" if name == "relay" else "WORKER_METRICS_PORT"
            envs[name][key] = str(port)
            metrics_urls[name] = f"http://127.0.0.1:{port}/metrics"
        stack = Stack(
            settings=settings, direct=direct,
            auth_url=f"http://127.0.0.1:{ports['auth']}",
            users_url=f"http://127.0.0.1:{ports['users']}",
            admin_url=f"http://127.0.0.1:{ports['admin']}" if with_admin else None,
            processes={}, commands=commands, envs=envs, metrics_urls=metrics_urls,
            proxies=proxies, log_dir=log_dir,
            portal_url=f"http://127.0.0.1:{ports['portal']}" if with_frontends else None,
            console_url=f"http://127.0.0.1:{ports['console']}" if with_frontends else None,
        )
        if with_frontends:
            targets = {n: u for n, u in metrics_urls.items() if n not in HTTP_PROCESSES}
            envs["console"]["CONSOLE_METRICS_TARGETS"] = ",".join(
                f"{n}={u}" for n, u in targets.items()
            )
        exits.callback(stack.stop)
        for name in commands:
            stack.start(name)
        _wait_ready(stack)
        yield stack


def wait_until(predicate: object, timeout_s: float, what: str, interval_s: float = 0.2) -> None:
    """Poll ``predicate()`` until true; AssertionError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout_s}s")
        time.sleep(interval_s)


def _wait_ready(stack: Stack, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    urls = [u for u in (stack.auth_url, stack.users_url, stack.admin_url, stack.portal_url,
                        stack.console_url) if u]
    for url in [f"{u}/ready" for u in urls] + [
        stack.metrics_urls[n] for n in stack.processes if n not in HTTP_PROCESSES
    ]:
        while True:
            for name, proc in stack.processes.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}")
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} not ready after {timeout_s}s")
            time.sleep(0.1)


async def declare_tap(url: str, queue_name: str, routing_key: str) -> None:
    """A durable queue that collects ``routing_key`` events for a test to inspect."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, auto_delete=False)
        await queue.bind(EVENTS_EXCHANGE, routing_key=routing_key)


async def next_tapped(url: str, queue_name: str) -> aio_pika.abc.AbstractIncomingMessage:
    """The next message of a tap queue, waiting up to 10 s."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(queue_name)
        for _ in range(200):
            message = await queue.get(fail=False, no_ack=True)
            if message is not None:
                return message
            await asyncio.sleep(0.05)
    raise AssertionError(f"no message in {queue_name} within 10 s")
