"""The whole system as ``docker-compose.yml`` describes it, one namespace per process.

:class:`Deployment` reads the compose file with the harness's ``.env``
(``tests/cluster/harness.env``: the ``cluster`` profile, three broker URLs, tesseract OCR),
and starts the services in ``depends_on`` order: the infrastructure from this machine's
binaries (``tests.cluster.infra``), the one-shot jobs (``migrate``, ``rabbitmq-cluster``,
``topology``) to completion, and every long-running service with **its compose command and
environment and nothing else** (plus ``PATH``/``PYTHONPATH``, what the image provides),
each on a host of its own; a service waited for with ``service_healthy`` must pass its
compose health check first. The relay runs as several copies (``docker compose up --scale
relay=2``). A named volume (``certs:/certs``) is a private directory, bind-mounted at its
compose path in a mount namespace of the process's own. An operator namespace (``ops``)
and a client namespace (``client``) hold no service: the harness checks from the first
and loads the APIs from the second.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from tests.cluster.compose import ROOT, Service, load, read_env_file, start_order
from tests.cluster.infra import Postgres, RabbitNode, Redis, remove_tree, wait_until
from tests.cluster.net import HarnessError, Host, Network, kill_all, run, run_prefix

HARNESS_ENV = ROOT / "tests" / "cluster" / "harness.env"
INFRA = {"postgres", "redis"}
OBSERVERS = ("prom/", "grafana/")
"""Images of services outside the data path (metrics, dashboards): not run by the harness."""


def python_command(command: list[str]) -> list[str]:
    """The image's ``python`` is this interpreter (the project's virtualenv)."""
    return [sys.executable if part == "python" else part for part in command]


Mount = tuple[Path, str]
"""A named volume's private directory and where the service mounts it (``/certs``)."""


def with_mounts(command: list[str], mounts: list[Mount]) -> list[str]:
    """``command`` in a mount namespace of its own where each volume is bind-mounted at its
    compose target, as a container sees it; the host's own paths stay as they are."""
    if not mounts:
        return command
    binds = " && ".join(
        f"mount --bind {shlex.quote(str(source))} {shlex.quote(target)}"
        for source, target in mounts
    )
    return ["unshare", "-m", "--propagation", "private", "sh", "-c",
            binds + ' && exec "$@"', "sh", *command]


@dataclass
class AppProcess:
    service: Service
    host: Host
    log: IO[bytes]
    mounts: list[Mount] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
            "HOME": str(Path(self.log.name).parent),
            **self.service.environment,
        }

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.host.exec_args(with_mounts(python_command(self.service.command), self.mounts)),
            env=self.env(), cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
        )

    def healthy(self) -> bool:
        test = self.service.healthcheck
        if not test:
            return self.alive()
        try:  # as `docker exec` runs it: the service's environment and volumes
            result = run(self.host.exec_args(with_mounts(python_command(test[1:]), self.mounts)),
                         env=self.env(), check=False, timeout=30)
        except subprocess.TimeoutExpired:
            return False
        return result.returncode == 0

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """kill -9 of everything on the host (the process and its children)."""
        kill_all(self.host)
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(10)

    def stop(self, timeout: float = 40) -> None:
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def children(self) -> list[int]:
        """Processes on the host other than the service's main process (partition workers)."""
        main = self.process.pid if self.process else -1
        return [pid for pid in self.host.pids() if pid != main]


@dataclass
class Deployment:
    prefix: str = field(default_factory=run_prefix)
    relay_copies: int = 2
    env_file: Path = HARNESS_ENV
    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ams-cluster-")))
    keep_data: bool = False
    net: Network = field(init=False)
    services: dict[str, Service] = field(init=False)
    env: dict[str, str] = field(init=False)
    postgres: Postgres | None = None
    redis: Redis | None = None
    rabbits: dict[str, RabbitNode] = field(default_factory=dict)
    apps: dict[str, AppProcess] = field(default_factory=dict)
    ops: Host | None = None
    client: Host | None = None
    skipped: list[str] = field(default_factory=list)
    mount_points: list[Path] = field(default_factory=list)
    _logs: list[IO[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.env = read_env_file(self.env_file)
        self.services = load(self.env)
        self.net = Network(self.prefix)
        self.base.chmod(0o755)
        (self.base / "logs").mkdir(exist_ok=True)

    # --- bring-up -------------------------------------------------------------------------

    def up(self, *, on_step: object = None) -> None:
        self.net.open()
        self.ops = self.net.host("ops")
        self.client = self.net.host("client")
        for name in start_order(self.services):
            service = self.services[name]
            if service.image.startswith(OBSERVERS):
                self.skipped.append(name)
                continue
            if callable(on_step):
                on_step(name)
            self._start(service)
            self._wait_for_dependents(service)

    def _start(self, service: Service) -> None:
        name = service.name
        if name == "postgres":
            self.postgres = Postgres(service, self.net.host(name), self.base / name)
            self.postgres.start(self.net.subnet)
        elif name == "redis":
            self.redis = Redis(service, self.net.host(name), self.base / name)
            self.redis.start()
        elif name.startswith("rabbitmq") and not service.one_shot:
            node = RabbitNode(service, self.net.host(service.hostname), self.base / name)
            self.rabbits[name] = node
            node.start()
        elif service.one_shot:
            self._run_one_shot(service)
        elif name == "relay":
            for copy in range(1, self.relay_copies + 1):
                self._start_app(service, f"relay-{copy}")
        else:
            self._start_app(service, service.hostname)

    def _run_one_shot(self, service: Service) -> None:
        host = self.net.host(service.name)
        if service.command[:1] == ["python"]:
            env = AppProcess(service, host, self._log(service.name)).env()
            command = with_mounts(python_command(service.command), self._mounts(service))
        else:  # the broker image's CLI tools, with the machine's localhost pins left out
            env = {**RabbitNode(service, host, self.base / service.name).env(),
                   **service.environment}
            env.pop("RABBITMQ_NODENAME", None)
            command = service.command
        result = run(host.exec_args(command), env=env, timeout=600, check=False)
        self._log(service.name).write((result.stdout + result.stderr).encode())
        if result.returncode != 0:
            raise HarnessError(
                f"one-shot service {service.name} failed ({result.returncode}): "
                f"{(result.stdout + result.stderr)[-1500:]}"
            )
        if service.name == "migrate" and self.on_migrated is not None:
            self.on_migrated(self)
        if service.name == "topology" and self.on_topology is not None:
            self.on_topology(self)

    def _mounts(self, service: Service) -> list[Mount]:
        """The service's named volumes (``certs:/certs``) as private directories."""
        mounts: list[Mount] = []
        for volume in service.volumes:
            source, _, rest = volume.partition(":")
            target = rest.split(":")[0]
            if not rest or source.startswith((".", "/")):
                continue
            directory = self.base / "volumes" / source
            directory.mkdir(parents=True, exist_ok=True)
            if not Path(target).exists():  # a mount point; removed again by close()
                Path(target).mkdir(parents=True)
                self.mount_points.append(Path(target))
            mounts.append((directory, target))
        return mounts

    on_migrated: object = None
    on_topology: object = None

    def _start_app(self, service: Service, hostname: str) -> None:
        aliases = (service.hostname,) if hostname != service.hostname else ()
        host = self.net.host(hostname, *aliases)
        app = AppProcess(service, host, self._log(hostname), self._mounts(service))
        self.apps[hostname] = app
        app.start()

    def _log(self, name: str) -> IO[bytes]:
        path = self.base / "logs" / f"{name}.log"
        for log in self._logs:
            if log.name == str(path):
                return log
        log = path.open("ab")
        self._logs.append(log)
        return log

    def _wait_for_dependents(self, service: Service) -> None:
        """Wait for health when a later service depends on it with ``service_healthy``."""
        waited_for = any(
            rule.get("condition") == "service_healthy" and target == service.name
            for other in self.services.values() for target, rule in other.depends_on.items()
            if not other.image.startswith(OBSERVERS)
        )
        if not waited_for or service.one_shot:
            return
        self.wait_healthy(service.name)

    def wait_healthy(self, name: str, timeout: float = 180) -> None:
        if name == "postgres" or name == "redis":
            return  # started synchronously above
        if name in self.rabbits:
            self.rabbits[name].wait_healthy(timeout)
            return
        apps = [a for h, a in self.apps.items() if a.service.name == name]
        for app in apps:
            wait_until(lambda a=app: self._healthy_or_dead(a), timeout=timeout,
                       what=f"{app.host.name} to be healthy", interval=1)

    def _healthy_or_dead(self, app: AppProcess) -> bool:
        if not app.alive():
            raise HarnessError(f"{app.host.name} exited; see {app.log.name}")
        return app.healthy()

    def wait_all_healthy(self, timeout: float = 180) -> None:
        for name in self.rabbits:
            self.wait_healthy(name, timeout)
        for app in self.apps.values():
            wait_until(lambda a=app: self._healthy_or_dead(a), timeout=timeout,
                       what=f"{app.host.name} to be healthy", interval=1)

    # --- addresses for the harness's own checks (it has no name resolution) --------------

    def ip(self, hostname: str) -> str:
        for host in self.net.hosts.values():
            if hostname == host.name or hostname in host.aliases:
                return host.ip
        raise HarnessError(f"no host {hostname!r}")

    def resolved(self, url: str) -> str:
        """``url`` with its compose host name replaced by the address (for the ops host)."""
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(url)
        assert parts.hostname is not None
        netloc = parts.netloc.replace(f"@{parts.hostname}", f"@{self.ip(parts.hostname)}")
        if "@" not in parts.netloc:
            netloc = parts.netloc.replace(parts.hostname, self.ip(parts.hostname), 1)
        return urlunsplit(parts._replace(netloc=netloc))

    def app_env(self, name: str = "topology") -> dict[str, str]:
        """The compose environment of service ``name`` (amsctl runs with topology's)."""
        return dict(self.services[name].environment)

    def amsctl(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """``amsctl`` on the operator's host, with the compose environment of ``topology``."""
        assert self.ops is not None
        env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT),
               "HOME": str(self.base), **self.app_env()}
        env["AMSCTL_AUDIT_LOG"] = str(self.base / "amsctl-audit.jsonl")
        command = with_mounts([sys.executable, "-m", "amsctl", *args],
                              self._mounts(self.services["topology"]))
        return run(self.ops.exec_args(command), env=env, timeout=timeout, check=False)

    # --- teardown -------------------------------------------------------------------------

    def close(self) -> None:
        errors: list[str] = []
        for app in self.apps.values():
            with contextlib.suppress(Exception):
                app.kill()
        for node in self.rabbits.values():
            with contextlib.suppress(Exception):
                node.close()
        for service in (self.redis, self.postgres):
            if service is not None:
                try:
                    service.close()
                except Exception as exc:
                    errors.append(f"{type(service).__name__}: {exc}")
        self.net.close()
        for point in self.mount_points:
            with contextlib.suppress(OSError):
                point.rmdir()  # empty: only namespaces of our own mounted anything on it
        for log in self._logs:
            log.close()
        if not self.keep_data:
            remove_tree(self.base)
        time.sleep(0)
        if errors:
            raise HarnessError("; ".join(errors))
