"""The harness: deploy, load, inject a fault, heal, measure, check, tear down.

``python -m tests.cluster [--quick] [--keep-logs] [NAME ...]`` (``make test-cluster``) runs every
scenario of :data:`SCENARIOS` on one deployment and prints one JSON line per scenario:
load held (events committed per second), lost, duplicated effects, recovery seconds (fault
healed -> backlog zero) and the problems found (none when it passed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.cluster.checks import Probe, pending, verify
from tests.cluster.deploy import Deployment
from tests.cluster.infra import RabbitNode
from tests.cluster.net import HarnessError, inside

WORK_QUEUES = ("profiles", "ocr", "documents", "saga")


@dataclass
class Scenario:
    name: str
    fault_s: float
    inject: Callable[[Harness], None]
    heal: Callable[[Harness], None]
    what: str
    needs: tuple[str, ...] = ()
    """Commands the fault is made with, checked before anything starts."""


@dataclass
class Harness:
    deploy: Deployment
    quick: bool = False
    probe: Probe | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    wan: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    # --- life cycle -------------------------------------------------------------------------
    def __enter__(self) -> Harness:
        try:
            self.deploy.on_migrated = self._instrument
            self.deploy.on_topology = self._tap
            self.deploy.up()
            self.deploy.wait_all_healthy()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stack.close()
        self.deploy.close()

    def _enter_ops(self) -> Probe:
        if self.probe is None:
            assert self.deploy.ops is not None
            self._stack.enter_context(inside(self.deploy.ops.ns))
            env = self.deploy.app_env()
            amqp = ",".join(self.deploy.resolved(u) for u in env["RABBITMQ_URL"].split(","))
            mgmt = ",".join(
                self.deploy.resolved(u) for u in env["RABBITMQ_MANAGEMENT_URL"].split(",")
            )
            self.probe = Probe(self.deploy.ip("postgres"), amqp, mgmt)
        return self.probe

    def _instrument(self, _: Deployment) -> None:
        asyncio.run(self._enter_ops().instrument())

    def _tap(self, _: Deployment) -> None:
        asyncio.run(self._enter_ops().declare_tap())

    # --- handles for the faults -------------------------------------------------------------
    def node_leading_work_queues(self) -> RabbitNode:
        assert self.probe is not None
        leaders: dict[str, int] = {}
        for q in self.probe.queues():
            base = q["name"].split(".p")[0]
            if base in WORK_QUEUES and "retry" not in q["name"] and q.get("leader"):
                leaders[q["leader"]] = leaders.get(q["leader"], 0) + 1
        node = max(leaders, key=lambda n: leaders[n]) if leaders else "rabbit@rabbitmq"
        self.notes["leader"] = node
        return next(r for r in self.deploy.rabbits.values() if r.node == node)

    def rabbit_ctl(self, *args: str) -> None:
        for node in self.deploy.rabbits.values():
            if node.process is not None:
                node.ctl(*args)
                return

    # --- one scenario -----------------------------------------------------------------------
    def run(self, scenario: Scenario, *, warmup_s: float = 8, after_s: float = 8) -> dict[str, Any]:
        probe = self.probe
        assert probe is not None and self.deploy.client is not None
        load_file = self.deploy.base / f"load-{scenario.name}.jsonl"
        total = warmup_s + scenario.fault_s + after_s
        started = time.time()
        load = self._start_load(load_file, total)
        try:
            time.sleep(warmup_s)
            self.notes["injected_at"] = _utc(time.time())  # to read the logs against
            scenario.inject(self)
            time.sleep(scenario.fault_s)
            scenario.heal(self)
            healed = time.time()
            self.notes["healed_at"] = _utc(healed)
            recovery = self._wait_backlog_zero(healed)
        finally:
            load.wait(total + 120)
        ended = time.time()
        self._settle(load_file)
        counts = asyncio.run(verify(probe, load_file))
        crashed = [h for h, a in self.deploy.apps.items() if not a.alive()]
        if crashed:
            counts["problems"].append(f"processes not running: {crashed}")
        if not counts["accepted"].get("register"):
            counts["problems"].append("no request was accepted: the load did not run")
        for summary in counts["refused"]:
            errors = {k: v for k, v in (summary or {}).items() if k.endswith("_500")}
            if errors:  # a dependency away is a 503 with Retry-After, never a 500
                counts["problems"].append(f"requests answered 500: {errors}")
        dead_letters = self._dead_letters()
        counts["problems"] += dead_letters["unexplained"]
        committed = asyncio.run(self._committed_between(started, ended))
        return {
            "scenario": scenario.name, "fault": scenario.what, "fault_s": scenario.fault_s,
            "load_events_per_s": round(committed / (ended - started), 1),
            "lost": counts["lost"], "duplicated": counts["duplicated"],
            "recovery_s": None if recovery is None else round(recovery, 1),
            "out_of_order": counts["out_of_order"], "committed_total": counts["committed"],
            "delivered_total": counts["delivered"], "accepted": counts["accepted"],
            "refused": counts["refused"], "dead_letters": dead_letters["reasons"],
            "notes": dict(self.notes), "problems": counts["problems"],
            "passed": not counts["problems"] and recovery is not None,
        }

    def _start_load(self, out: Path, seconds: float) -> subprocess.Popen[bytes]:
        assert self.deploy.client is not None
        rates = ["--register", "3", "--upload", "1", "--delete", "0.2", *self._client_tls()]
        env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(Path.cwd())}
        from tests.cluster.compose import ROOT

        env["PYTHONPATH"] = str(ROOT)
        log = (self.deploy.base / "logs" / "load.log").open("ab")
        return subprocess.Popen(
            self.deploy.client.exec_args([sys.executable, "-m", "tests.cluster.load",
                                          "--seconds", str(seconds), "--out", str(out), *rates]),
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
        )

    def _client_tls(self) -> list[str]:
        """How a user reaches the auth API: https with the deployment's CA when it serves TLS."""
        auth = self.deploy.services["auth"].environment
        if not auth.get("HTTP_TLS_CERT_FILE"):
            return []
        ca = auth.get("TLS_CA_FILE", "")
        for source, target in self.deploy._mounts(self.deploy.services["auth"]):
            if ca.startswith(target + "/"):
                ca = str(source / ca.removeprefix(target + "/"))
        return ["--auth-url", "https://auth:8002", "--ca", ca]

    def _wait_backlog_zero(self, since: float, timeout: float = 300, *,
                           strict: bool = False) -> float | None:
        """Seconds from ``since`` until the backlog is zero (None: it never was)."""
        assert self.probe is not None
        while time.time() - since < timeout:
            try:
                backlog = asyncio.run(self.probe.backlog(strict=strict))
            except Exception:  # a dependency still coming back
                backlog = {"unreachable": 1}
            if not any(backlog.values()):
                return time.time() - since
            unacked = sum(n for k, n in backlog.items() if k.startswith("unacked:"))
            if unacked and not any(n for k, n in backlog.items() if not k.startswith("unacked:")):
                # What a count of ready messages alone would have taken for the end.
                self.notes["unacked_when_none_ready"] = max(
                    unacked, self.notes.get("unacked_when_none_ready", 0))
            time.sleep(0.5)
        return None

    def _settle(self, load_file: Path, timeout: float = 300) -> None:
        """After the load: everything accepted has taken effect, so the checks see the end
        state: the outboxes empty (every event confirmed), no message ready or unacknowledged
        in any work or retry queue, and every accepted request's effect in its database
        (a profile per user, an OCR outcome per upload, every saga final), twice in a row
        more than the broker's 5 s statistics interval apart. Bounded: what has not settled
        by then is reported by the checks."""
        assert self.probe is not None
        start = time.time()
        while time.time() - start < timeout:
            if self._wait_backlog_zero(time.time(), timeout, strict=True) is None:
                return
            if self._pending(load_file):
                time.sleep(1)
                continue
            time.sleep(6)
            if (self._wait_backlog_zero(time.time(), 1, strict=True) is not None
                    and not self._pending(load_file)):
                self.notes["settled_s"] = round(time.time() - start, 1)
                return

    def _pending(self, load_file: Path) -> bool:
        assert self.probe is not None
        try:
            return any(asyncio.run(pending(self.probe, load_file)).values())
        except Exception:  # a database still coming back
            return True

    async def _committed_between(self, start: float, end: float) -> int:
        assert self.probe is not None
        total = 0
        for db in ("authdb", "apidb", "admindb"):
            rows = await self.probe.query(
                db, "SELECT count(*) AS n FROM harness_events WHERE committed_at "
                "BETWEEN to_timestamp($1) AND to_timestamp($2)", start, end)
            total += int(rows[0]["n"])
        return total

    def _dead_letters(self) -> dict[str, Any]:
        result = self.deploy.amsctl("dlq", "list", "--json")
        if result.returncode not in (0, 4):
            failure = f"amsctl dlq list failed: {result.stderr[-300:]}"
            return {"reasons": {}, "unexplained": [failure]}
        letters = json.loads(result.stdout or "[]")
        reasons: dict[str, int] = {}
        unexplained = []
        for letter in letters:
            reason = letter.get("error_type") or letter.get("reason")
            if not reason:
                unexplained.append(f"dead letter without a reason: {letter.get('message_id')}")
            reasons[f"{letter.get('queue')}: {reason}"] = reasons.get(
                f"{letter.get('queue')}: {reason}", 0) + 1
        return {"reasons": reasons, "unexplained": unexplained}


# --- the faults -------------------------------------------------------------------------------

def _kill_leader(h: Harness) -> None:
    node = h.node_leading_work_queues()
    h.notes["killed"] = node.node
    node.kill()


def _restart_killed(h: Harness) -> None:
    for node in h.deploy.rabbits.values():
        if node.process is None:
            node.start()
            node.wait_healthy()


def _partition(h: Harness) -> None:
    node = h.node_leading_work_queues()
    h.notes["partitioned"] = node.node
    h.deploy.net.isolate(node.host)


def _heal_partition(h: Harness) -> None:
    for node in h.deploy.rabbits.values():
        h.deploy.net.heal(node.host)


def _relay_hosts(h: Harness) -> list[Any]:
    return [a.host for name, a in h.deploy.apps.items() if name.startswith("relay")]


WAN_PORT = 15999


def _degrade(h: Harness) -> None:
    """200 ms +- 50 ms on the way to the brokers, 5 % packet loss both ways, for the relays."""
    from tests.cluster.compose import ROOT

    brokers = [n.host for n in h.deploy.rabbits.values()]
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT)}
    for relay in _relay_hosts(h):
        log = (h.deploy.base / "logs" / f"wan-{relay.name}.log").open("ab")
        h.wan.append(subprocess.Popen(
            relay.exec_args([sys.executable, "-m", "tests.cluster.wan", "--port", str(WAN_PORT),
                             "--delay-ms", "200", "--jitter-ms", "50"]),
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
        ))
        h.deploy.net.degrade(relay, brokers, loss_pct=5, port=5672, redirect_to=WAN_PORT)
        h.deploy.net.abort_connections(relay, brokers, 5672)


def _restore(h: Harness) -> None:
    h.deploy.net.restore(*_relay_hosts(h))
    for proxy in h.wan:
        proxy.kill()
        proxy.wait(10)
    h.wan.clear()


def _observe_alarm(h: Harness) -> None:
    """What an operator sees during a broker alarm: amsctl outbox status and the metrics."""
    time.sleep(5)
    status = h.deploy.amsctl("outbox", "status")
    h.notes["amsctl_outbox_status"] = status.stdout.strip().splitlines()[-8:]


def _memory_alarm(h: Harness) -> None:
    h.rabbit_ctl("set_vm_memory_high_watermark", "0.0001")
    _observe_alarm(h)


def _memory_ok(h: Harness) -> None:
    h.rabbit_ctl("set_vm_memory_high_watermark", "0.6")


def _disk_alarm(h: Harness) -> None:
    h.rabbit_ctl("set_disk_free_limit", "100000GB")
    _observe_alarm(h)


def _disk_ok(h: Harness) -> None:
    h.rabbit_ctl("set_disk_free_limit", "1GB")


def _postgres_restart(h: Harness) -> None:
    assert h.deploy.postgres is not None
    h.deploy.postgres.restart()


def _redis_down(h: Harness) -> None:
    assert h.deploy.redis is not None
    h.deploy.redis.kill()


def _redis_up(h: Harness) -> None:
    assert h.deploy.redis is not None
    h.deploy.redis.start()


def _kill_during_node_failure(h: Harness) -> None:
    _kill_leader(h)
    time.sleep(2)
    relay = h.deploy.apps["relay-1"]
    relay.kill()
    h.notes["killed_relay"] = "relay-1"
    profiles = h.deploy.apps["profiles"]
    children = profiles.children()
    if children:
        os.kill(children[-1], 9)
        h.notes["killed_partition_pid"] = children[-1]


def _recover_node_and_relay(h: Harness) -> None:
    _restart_killed(h)
    relay = h.deploy.apps["relay-1"]
    relay.start()  # compose: restart unless-stopped


def _nothing(h: Harness) -> None:
    return None


SCENARIOS: list[Scenario] = [
    Scenario("baseline", 15, _nothing, _nothing,
             "no fault: the same load and timeline, the floor the others are compared to"),
    Scenario("leader-kill", 15, _kill_leader, _restart_killed,
             "kill -9 of the node leading most work queues; restarted 15 s later"),
    Scenario("partition", 20, _partition, _heal_partition,
             "the leading node cut off from the other nodes and every client for 20 s"),
    Scenario("relay-netem", 30, _degrade, _restore,
             "relays -> brokers 200 ms +- 50 ms delay, 5 % packet loss both ways, for 30 s",
             needs=("iptables",)),
    Scenario("memory-alarm", 20, _memory_alarm, _memory_ok,
             "memory alarm (vm_memory_high_watermark 0.0001) for 20 s: publishers blocked"),
    Scenario("disk-alarm", 20, _disk_alarm, _disk_ok,
             "disk alarm (disk_free_limit above the free space) for 20 s: publishers blocked"),
    Scenario("postgres-restart", 0, _postgres_restart, _nothing,
             "PostgreSQL restarted (fast shutdown) under load"),
    Scenario("redis-restart", 5, _redis_down, _redis_up,
             "Redis killed, started again 5 s later"),
    Scenario("relay-and-partition-kill", 15, _kill_during_node_failure, _recover_node_and_relay,
             "during a leader node kill: kill -9 of relay-1 and of one profiles partition process"),
]
QUICK = ("leader-kill", "partition", "memory-alarm")
"""CI's short run (``make test``): a node loss, a partition and a broker alarm."""


@contextlib.contextmanager
def harness(quick: bool = False) -> Iterator[Harness]:
    if os.geteuid() != 0:
        raise HarnessError("the cluster harness needs root (network namespaces)")
    h = Harness(Deployment(), quick=quick)
    with h:
        yield h


def _utc(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S.%f")[:-3]


def keep_logs(deploy: Deployment) -> Path:
    """A copy of every process's log and of each broker node's own logs (a partition's
    post-mortem reads what the nodes saw), in a directory the teardown leaves alone."""
    kept = Path(tempfile.mkdtemp(prefix="ams-cluster-logs-"))
    shutil.copytree(deploy.base / "logs", kept, dirs_exist_ok=True)
    for name, node in deploy.rabbits.items():
        if (node.base / "log").is_dir():
            shutil.copytree(node.base / "log", kept / name, dirs_exist_ok=True)
        if (node.base / "server.log").is_file():
            shutil.copy(node.base / "server.log", kept / f"{name}-server.log")
    return kept


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the teardown


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    quick = "--quick" in argv
    only = [a for a in argv if not a.startswith("--")]
    chosen = [
        s for s in SCENARIOS
        if (not only or s.name in only) and (not quick or s.name in QUICK)
    ]
    missing = sorted({c for s in chosen for c in s.needs if shutil.which(c) is None})
    if missing:  # before a quarter of an hour of scenarios, not in the middle of them
        print(f"cluster: {', '.join(missing)} not found (scripts/install.sh installs it; "
              f"needed by {', '.join(s.name for s in chosen if set(s.needs) & set(missing))})",
              file=sys.stderr)
        return 2
    failed = 0
    floor: float | None = None
    with harness(quick) as h:
        try:
            for scenario in chosen:
                h.notes = {}
                result = h.run(scenario)
                if scenario.name == "baseline":
                    floor = result["load_events_per_s"]
                if floor:  # load held under the fault, as a share of the no-fault run's
                    result["load_vs_baseline"] = round(result["load_events_per_s"] / floor, 2)
                failed += not result["passed"]
                print(json.dumps(result), flush=True)
        except BaseException:  # a scenario that could not finish is a failure too
            failed += 1
            raise
        finally:
            if failed or "--keep-logs" in argv:  # the logs outlive the teardown
                print(json.dumps({"logs": str(keep_logs(h.deploy))}), flush=True)
    return 1 if failed else 0
