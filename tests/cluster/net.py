"""Hosts without containers: one network namespace per process, joined by a bridge.

A :class:`Network` owns a *switch* namespace holding a bridge; every :meth:`Network.host`
is a namespace of its own with one veth link to that bridge, one address, and its own
``/etc/netns/<ns>/hosts`` so that ``ip netns exec`` gives the processes in it the compose
host names. Addresses exist only on links inside namespaces made here; the machine's own
interfaces, services and name resolution are never touched.

Faults act on a host's link: :meth:`Network.isolate` (the bridge port goes down, so the host
can reach nobody and nobody reaches it) and :meth:`Network.degrade` (packet loss between a
host and some peers, and its connections to them through a delaying proxy).

:meth:`Network.close` kills every process left in the namespaces, deletes the namespaces
(which deletes their links) and the ``/etc/netns`` directories, also after a failure.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

NETNS_ETC = Path("/etc/netns")
NETNS_RUN = Path("/run/netns")
CLONE_NEWNET = 0x40000000


class HarnessError(RuntimeError):
    """The harness could not build or drive its deployment."""


def run(cmd: Sequence[str], *, check: bool = True, timeout: float = 60,
        env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        list(cmd), capture_output=True, text=True, timeout=timeout, check=False,
        env=None if env is None else dict(env),
    )
    if check and result.returncode != 0:
        raise HarnessError(
            f"{' '.join(cmd)} exited {result.returncode}: {result.stderr.strip()[-800:]}"
        )
    return result


@dataclass
class Host:
    """One namespace = one machine of the deployment, with one address."""

    name: str
    """The compose host name (``auth``, ``rabbitmq-2``, ``client`` …)."""
    ns: str
    ip: str
    port: str
    """The bridge-side end of the host's veth (inside the switch namespace)."""
    aliases: tuple[str, ...] = ()

    def exec_args(self, cmd: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *cmd]

    def run(self, cmd: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        return run(self.exec_args(cmd), **kwargs)  # type: ignore[arg-type]

    def pids(self) -> list[int]:
        out = run(["ip", "netns", "pids", self.ns], check=False).stdout
        return [int(p) for p in out.split()]


@dataclass
class Network:
    prefix: str
    subnet: str = "10.214.0"
    hosts: dict[str, Host] = field(default_factory=dict)
    _next: int = 10

    @property
    def switch(self) -> str:
        return f"{self.prefix}-sw"

    def open(self) -> Network:
        sweep()
        run(["ip", "netns", "add", self.switch])
        run(["ip", "-n", self.switch, "link", "add", "br0", "type", "bridge"])
        run(["ip", "-n", self.switch, "link", "set", "br0", "up"])
        run(["ip", "-n", self.switch, "link", "set", "lo", "up"])
        return self

    def host(self, name: str, *aliases: str) -> Host:
        """A new namespace named after ``name`` with an address on the bridge."""
        if name in self.hosts:
            raise HarnessError(f"host {name!r} exists")
        number = self._next
        self._next += 1
        ns = f"{self.prefix}-{name}"
        port = f"v{number}"
        ip = f"{self.subnet}.{number}"
        run(["ip", "netns", "add", ns])
        run(["ip", "-n", self.switch, "link", "add", port, "type", "veth",
             "peer", "name", "eth0", "netns", ns])
        run(["ip", "-n", self.switch, "link", "set", port, "master", "br0", "up"])
        run(["ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0"])
        run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        host = Host(name, ns, ip, port, aliases)
        self.hosts[name] = host
        self._write_hosts()
        return host

    def _write_hosts(self) -> None:
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
        lines += [f"{h.ip}\t{' '.join((h.name, *h.aliases))}" for h in self.hosts.values()]
        text = "\n".join(lines) + "\n"
        for host in self.hosts.values():
            directory = NETNS_ETC / host.ns
            directory.mkdir(parents=True, exist_ok=True)
            (directory / "hosts").write_text(text)
            (directory / "hostname").write_text(host.name + "\n")

    # --- faults ----------------------------------------------------------------------------

    def isolate(self, host: Host) -> None:
        """Cut ``host`` off from every other host (its bridge port goes down)."""
        run(["ip", "-n", self.switch, "link", "set", host.port, "down"])

    def heal(self, host: Host) -> None:
        run(["ip", "-n", self.switch, "link", "set", host.port, "up"])

    def degrade(self, host: Host, peers: Sequence[Host], *, loss_pct: float, port: int,
                redirect_to: int) -> None:
        """Packet loss between ``host`` and ``peers`` (both directions, ``iptables -m
        statistic``), and ``host``'s new TCP connections to ``peers:port`` redirected to a
        local delaying proxy on ``redirect_to`` (:mod:`tests.cluster.wan`; this kernel has
        no netem). Established connections are aborted (``ss -K``) so they reconnect through
        the slow link, as they would after the first lost segments time out."""
        probability = f"{loss_pct / 100:.4f}"
        for peer in peers:
            for chain, side in (("OUTPUT", "-d"), ("INPUT", "-s")):
                host.run(["iptables", "-A", chain, side, peer.ip, "-m", "statistic",
                          "--mode", "random", "--probability", probability, "-j", "DROP"])
            host.run(["iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", peer.ip,
                      "--dport", str(port), "-j", "REDIRECT", "--to-ports", str(redirect_to)])

    def abort_connections(self, host: Host, peers: Sequence[Host], port: int) -> None:
        for peer in peers:
            host.run(["ss", "-K", "dst", peer.ip, "dport", "=", str(port)], check=False)

    def restore(self, *hosts: Host) -> None:
        for host in hosts:
            host.run(["iptables", "-F"], check=False)
            host.run(["iptables", "-t", "nat", "-F"], check=False)

    # --- teardown ---------------------------------------------------------------------------

    def close(self) -> None:
        for host in list(self.hosts.values()):
            kill_all(host)
        for host in list(self.hosts.values()):
            run(["ip", "netns", "del", host.ns], check=False)
            _remove_etc(host.ns)
        run(["ip", "netns", "del", self.switch], check=False)
        self.hosts.clear()


def kill_all(host: Host) -> None:
    """SIGKILL every process in ``host``'s namespace (what a power cut does)."""
    for _ in range(20):
        pids = host.pids()
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def _remove_etc(ns: str) -> None:
    directory = NETNS_ETC / ns
    if directory.is_dir():
        for child in directory.iterdir():
            child.unlink()
        directory.rmdir()


FAMILY = "amsc"
"""Namespaces of a harness run are ``amsc<pid>-<host>``: runs side by side (several
engineers' test runs on one machine) never touch each other's."""


def run_prefix() -> str:
    return f"{FAMILY}{os.getpid()}"


def _owner_alive(ns: str) -> bool:
    digits = ns.removeprefix(FAMILY).split("-", 1)[0]
    if not digits.isdigit():
        return True  # not ours to judge
    try:
        os.kill(int(digits), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep() -> list[str]:
    """Remove what runs that died without their teardown (SIGKILL) left behind: only
    namespaces whose owning harness process is gone."""
    if not NETNS_RUN.is_dir():
        return []
    left = sorted(
        p.name for p in NETNS_RUN.iterdir()
        if p.name.startswith(FAMILY) and not _owner_alive(p.name)
    )
    for ns in left:
        for pid in run(["ip", "netns", "pids", ns], check=False).stdout.split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
    time.sleep(0.2 if left else 0)
    for ns in left:
        run(["ip", "netns", "del", ns], check=False)
        _remove_etc(ns)
    return left


_libc = ctypes.CDLL(None, use_errno=True)


@contextlib.contextmanager
def inside(ns: str) -> Iterator[None]:
    """Run the calling thread (and the threads and processes it starts) in namespace ``ns``.

    The harness itself checks the deployment from a namespace of its own, like an operator's
    machine: the root namespace has no route to any host.
    """
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(NETNS_RUN / ns, os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            raise HarnessError(f"setns({ns}) failed: {os.strerror(ctypes.get_errno())}")
        try:
            yield
        finally:
            _libc.setns(original, CLONE_NEWNET)
    finally:
        os.close(target)
        os.close(original)
