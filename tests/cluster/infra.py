"""The infrastructure services of the compose file, run from this machine's binaries.

Compose runs images; here the same services run from the installed PostgreSQL 15, Redis and
RabbitMQ 3.10, each in its own namespace, **private** (own data directories, own ports in
their own network namespace), configured from what the compose service mounts and sets:

- ``postgres``: ``initdb`` + ``pg_ctl`` as the ``postgres`` user, then the SQL files the
  service mounts into ``/docker-entrypoint-initdb.d`` (as the image's first boot does).
- ``redis``: the service's command, plus ``--protected-mode no`` as the image's entrypoint adds.
- ``rabbitmq*``: ``rabbitmq-server`` as the ``rabbitmq`` user with the service's environment
  (the cookie), node name ``rabbit@<hostname>`` (the image's default), and the files the
  service mounts under ``/etc/rabbitmq`` copied into a private directory. The machine's
  ``/etc/rabbitmq/rabbitmq-env.conf`` pins the node name and distribution to localhost, so
  ``RABBITMQ_CONF_ENV_FILE``, ``RABBITMQ_CONFIG_FILE``, ``RABBITMQ_ENABLED_PLUGINS_FILE``,
  ``RABBITMQ_MNESIA_BASE`` and ``RABBITMQ_LOG_BASE`` point at private files instead.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from tests.cluster.compose import ROOT, Service
from tests.cluster.net import HarnessError, Host, kill_all, run

PG_BIN = Path("/usr/lib/postgresql/15/bin")
RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")
# Two shared cores: Erlang's schedulers must not busy-wait (the image's nodes own a machine).
ERL_QUIET = "+S 1:1 +sbwt none +sbwtdcpu none +sbwtdio none"


def chown_tree(path: Path, user: str) -> None:
    for parent in path.parents:  # the service user must be able to reach its directory
        if parent.stat().st_uid == 0 and parent.stat().st_mode & 0o005 != 0o005:
            parent.chmod(parent.stat().st_mode | 0o005)
    entry = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in (*dirs, *files):
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)


def wait_until(check: object, *, timeout: float, what: str, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if check():  # type: ignore[operator]
            return
        if time.monotonic() > deadline:
            raise HarnessError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Postgres:
    service: Service
    host: Host
    base: Path
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.data = self.base / "data"
        self.log = self.base / "postgres.log"

    def _as_postgres(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.host.run(["runuser", "-u", "postgres", "--", *cmd], check=check, timeout=120)

    def start(self, subnet: str) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        chown_tree(self.base, "postgres")
        self._as_postgres(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres",
                          "-A", "trust", "-E", "UTF8", "--no-sync")
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                "listen_addresses = '*'\nport = 5432\n"
                f"unix_socket_directories = '{self.data}'\n"
                "max_connections = 300\nfsync = on\nshared_buffers = 64MB\n"
            )
        with (self.data / "pg_hba.conf").open("a") as hba:
            # Trust on the harness's own links only (compose's password is accepted as well).
            hba.write(f"host all all {subnet}.0/24 trust\n")
        self._pg_ctl("start")
        for volume in self.service.volumes:
            source, _, target = volume.partition(":")
            if "/docker-entrypoint-initdb.d/" in target and source.endswith(".sql"):
                self._as_postgres(str(PG_BIN / "psql"), "-h", str(self.data), "-U", "postgres",
                                  "-v", "ON_ERROR_STOP=1", "-f", str(ROOT / source))

    def _pg_ctl(self, action: str, *extra: str) -> None:
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                          "-w", "-t", "60", action, *extra)

    def restart(self) -> None:
        self._pg_ctl("restart", "-m", "fast")

    def stop(self) -> None:
        self._pg_ctl("stop", "-m", "immediate")

    def close(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "stop", "-m",
                              "immediate", check=False)
        kill_all(self.host)


@dataclass
class HostedProcess:
    """A service's process on a host of its own, with its log."""

    service: Service
    host: Host
    base: Path
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    def kill(self) -> None:
        """kill -9 of the whole host: the process and everything it started."""
        kill_all(self.host)
        if self.process is not None:
            self.process.wait(10)
            self.process = None

    def close(self) -> None:
        self.kill()
        if self._log is not None:
            self._log.close()


@dataclass
class Redis(HostedProcess):

    def start(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        command = self.service.command or ["redis-server"]
        args = [*command, "--port", "6379", "--bind", "0.0.0.0", "--protected-mode", "no",
                "--dir", str(self.base), "--daemonize", "no"]
        self._log = (self.base / "redis.log").open("ab")
        self.process = subprocess.Popen(
            self.host.exec_args(args), stdout=self._log, stderr=subprocess.STDOUT
        )
        wait_until(self.healthy, timeout=30, what="redis")

    def healthy(self) -> bool:
        result = self.host.run(["redis-cli", "ping"], check=False, timeout=5)
        return "PONG" in result.stdout



@dataclass
class RabbitNode(HostedProcess):

    @property
    def node(self) -> str:
        return f"rabbit@{self.service.hostname}"

    def env(self) -> dict[str, str]:
        etc = self.base / "etc"
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "HOME": str(self.base),
            "LANG": "C.UTF-8",
            **self.service.environment,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_CONF_ENV_FILE": str(etc / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(etc / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(etc / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_PID_FILE": str(self.base / "rabbit.pid"),
        }
        env["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"] = (
            env.get("RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS", "") + " " + ERL_QUIET
        ).strip()
        return env

    def prepare(self) -> None:
        """The service's mounted /etc/rabbitmq files, in a private directory."""
        etc = self.base / "etc"
        for sub in ("etc/definitions.d", "mnesia", "log"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        (etc / "rabbitmq-env.conf").write_text("# private: the machine's pins localhost\n")
        config: list[str] = []
        extra: list[str] = []
        for volume in self.service.volumes:
            source, _, rest = volume.partition(":")
            target = rest.split(":")[0]
            if not source.startswith("./") or not target.startswith("/etc/rabbitmq/"):
                continue
            relative = target.removeprefix("/etc/rabbitmq/")
            text = (ROOT / source).read_text()
            if relative == "rabbitmq.conf":
                config.insert(0, text)
            elif relative.startswith("conf.d/"):
                extra.append(text)
            else:
                (etc / relative).parent.mkdir(parents=True, exist_ok=True)
                (etc / relative).write_text(text)
        merged = "\n".join([*config, *extra]).replace("/etc/rabbitmq/", f"{etc}/")
        # No volume in the harness can fill up: keep the broker's disk alarm meaningful.
        (etc / "rabbitmq.conf").write_text(merged)
        chown_tree(self.base, "rabbitmq")

    def start(self) -> None:
        if not (self.base / "etc").exists():
            self.prepare()
        self._log = (self.base / "server.log").open("ab")
        self.process = subprocess.Popen(
            self.host.exec_args(
                ["runuser", "-u", "rabbitmq", "--", str(RABBIT_BIN / "rabbitmq-server")]
            ),
            env=self.env(), stdout=self._log, stderr=subprocess.STDOUT, cwd=self.base,
        )

    def ctl(self, *args: str, tool: str = "rabbitmqctl", timeout: float = 60,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(
            self.host.exec_args(["runuser", "-u", "rabbitmq", "--", str(RABBIT_BIN / tool),
                                 "-n", self.node, *args]),
            env=self.env(), timeout=timeout, check=check,
        )

    def healthy(self) -> bool:
        """The compose service's own health check, run on the node's host."""
        test = self.service.healthcheck[1:] or ["rabbitmq-diagnostics", "-q", "ping"]
        tool, *args = test
        try:
            result = self.ctl(*args, tool=tool, timeout=30, check=False)
        except subprocess.TimeoutExpired:  # a busy machine: not healthy yet
            return False
        return result.returncode == 0

    def wait_healthy(self, timeout: float = 180) -> None:
        wait_until(self.healthy, timeout=timeout, what=f"{self.node} to be healthy", interval=1)



def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
