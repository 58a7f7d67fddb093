"""CPU per process during a benchmark phase, from /proc (Linux), grouped by role.

A phase is measured as the difference of two snapshots of every process's user + system
time. Roles: processes the benchmark names (relay, consumer, the benchmark itself as
producer…), PostgreSQL backends of the benchmark's own databases (their command line
names the database), the rest of PostgreSQL, RabbitMQ (``beam.smp``), and everything
else, which on a shared machine is the neighbours' load. ``cpu pressure (some)`` is the
kernel's pressure-stall figure for the phase: the share of time at least one runnable task
waited for a CPU (near 100 % means the cores are oversubscribed and every wake-up queues).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _snapshot() -> dict[int, tuple[str, float]]:
    out: dict[int, tuple[str, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks = int(fields[11]) + int(fields[12])  # utime + stime
        out[int(entry.name)] = (cmdline or stat[stat.index("(") + 1 : stat.rindex(")")], ticks)
    return out


def _cpu_stall_us() -> int | None:
    """Total µs some task waited for a CPU (/proc/pressure/cpu), None without PSI."""
    try:
        first = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    return int(first.rsplit("total=", 1)[1])


class CpuPhase:
    """``with CpuPhase(roles, db_tag) as phase: ...``; then ``phase.percent`` holds the CPU
    of each role in % of one core over the phase (200 = both cores of this machine)."""

    def __init__(self, roles: Mapping[str, int], db_tag: str) -> None:
        self._roles = dict(roles)
        self._db_tag = db_tag
        self.percent: dict[str, float] = {}

    def __enter__(self) -> CpuPhase:
        self._start, self._t0 = _snapshot(), time.monotonic()
        self._stall0 = _cpu_stall_us()
        return self

    def __exit__(self, *exc: object) -> None:
        end, wall = _snapshot(), time.monotonic() - self._t0
        by_pid = {pid: role for role, pid in self._roles.items()}
        totals: dict[str, float] = {}
        for pid, (cmdline, ticks) in end.items():
            before = self._start.get(pid, (cmdline, 0))[1]
            used = (ticks - before) / _TICK
            if used <= 0:
                continue
            role = by_pid.get(pid) or self._role(cmdline)
            totals[role] = totals.get(role, 0.0) + used
        self.percent = {
            role: round(100 * seconds / wall, 1)
            for role, seconds in sorted(totals.items(), key=lambda kv: -kv[1])
        }
        stall = _cpu_stall_us()
        if stall is not None and self._stall0 is not None:
            # PSI: share of the time at least one runnable task waited for a CPU.
            self.percent["cpu pressure (some)"] = round((stall - self._stall0) / 1e4 / wall, 1)

    def _role(self, cmdline: str) -> str:
        if cmdline.startswith("postgres"):
            return "postgres (bench dbs)" if self._db_tag in cmdline else "postgres (other)"
        if "beam.smp" in cmdline:
            return "rabbitmq"
        return "other (neighbours)"
