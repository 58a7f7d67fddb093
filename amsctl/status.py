"""``amsctl status``: the whole system on one screen.

Processes (each API's ``/health``, the relay's and workers' ``/metrics``), the outbox of
every database (backlog, age of the oldest unsent event, parked rows), every queue (ready,
unacknowledged, consumers) with its dead letters, and the deletion sagas in flight or
failed. Everything is asked at once with short timeouts; what cannot be reached is shown
as such instead of hiding the rest.

Exit codes: 0 everything answered and every process is up; 1 a process is down; 3 a
dependency (PostgreSQL, the RabbitMQ management API) is unreachable. Queue depths come from
the management API, which samples them (every 5 s by default): a count can be that old;
``amsctl dlq queues`` counts exactly.
"""

from __future__ import annotations

import asyncio
import shlex
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from amsctl.common import EXIT_FAILURE, EXIT_UNAVAILABLE, console, print_json, settings

if TYPE_CHECKING:
    from shared.config import Settings

app = typer.Typer(help="Processes, outboxes, queues, dead letters, sagas at a glance.")

PROBE_TIMEOUT_S = 1.0
DB_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Probe:
    """A process and the URL that answers while it is up."""

    name: str
    url: str


def _port_of(cfg: Settings, process: str) -> Any:
    """``<PROCESS>_PORT`` (``AUTH_PORT``, ``PORTAL_PORT`` …), or None for a process without one."""
    from shared.config import OVERRIDES

    where = OVERRIDES.get(f"{process}_port")
    return getattr(getattr(cfg, where[0]), where[1]) if where else None


def procfile_probes(procfile: Path, cfg: Settings) -> list[Probe]:
    """One probe per Procfile process: an HTTP service's ``/health`` on its port setting
    (``python -m apps.<name>`` or ``frontends.<name>`` -> ``<NAME>_PORT``), otherwise
    ``/metrics`` on the ``*_METRICS_PORT`` its line sets."""
    probes = []
    for line in procfile.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#") or ":" not in line:
            continue
        name, _, command = line.partition(":")
        words = shlex.split(command)
        env = dict(w.split("=", 1) for w in words if "=" in w and not w.startswith("-"))
        argv = [w for w in words if "=" not in w]
        host = "127.0.0.1" if cfg.http.host in ("0.0.0.0", "::") else cfg.http.host  # noqa: S104
        if argv[:2] == ["python", "-m"] and "." in argv[2]:
            port = _port_of(cfg, argv[2].rsplit(".", 1)[1])
            if port:
                probes.append(Probe(name.strip(), f"http://{host}:{port}/health"))
                continue
        port = next((v for k, v in env.items() if k.endswith("_METRICS_PORT")), None)
        if port:
            probes.append(Probe(name.strip(), f"http://127.0.0.1:{port}/metrics"))
    return probes


def parse_probe(text: str) -> Probe:
    name, sep, url = text.partition("=")
    if not sep or not url.startswith(("http://", "https://")):
        raise typer.BadParameter(f"expected NAME=URL, got {text!r}")
    return Probe(name, url)


async def _probe(client: Any, probe: Probe) -> dict[str, Any]:
    try:
        response = await client.get(probe.url)
    except Exception as exc:  # any failure to answer is "down", said with its reason
        return {"name": probe.name, "url": probe.url, "up": False,
                "detail": type(exc).__name__}
    up = response.status_code < 400
    return {"name": probe.name, "url": probe.url, "up": up,
            "detail": f"HTTP {response.status_code}"}


async def _processes(probes: list[Probe]) -> list[dict[str, Any]]:
    import httpx

    async with httpx.AsyncClient(timeout=PROBE_TIMEOUT_S) as client:
        return list(await asyncio.gather(*(_probe(client, p) for p in probes)))


async def _outbox(cfg: Settings, database: str) -> dict[str, Any]:
    import asyncpg

    from outbox import store
    from shared.db import asyncpg_dsn

    try:
        conn = await asyncpg.connect(asyncpg_dsn(cfg.database.url(database)),
                                     timeout=DB_TIMEOUT_S)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return {"database": database, "error": f"unreachable: {exc}"}
    try:
        return {"database": database, **asdict(await store.status(conn))}
    except asyncpg.PostgresError as exc:
        return {"database": database, "error": f"{exc} (migrated? amsctl db migrate)"}
    finally:
        await conn.close()


async def _sagas(cfg: Settings) -> dict[str, Any]:
    import sqlalchemy.exc

    from apps.auth import sagas
    from shared.db import create_engine, session_factory

    engine = create_engine(cfg.database.auth_url, pool_size=1)
    try:
        async with session_factory(engine)() as session:
            counts = await asyncio.wait_for(sagas.count_by_status(session), DB_TIMEOUT_S)
            return {"counts": counts}
    except (OSError, sqlalchemy.exc.DBAPIError, TimeoutError) as exc:
        orig = getattr(exc, "orig", exc)
        return {"error": f"authdb: {' '.join(str(orig).split())[:200]}"}
    finally:
        await engine.dispose()


def _queues(cfg: Settings) -> dict[str, Any]:
    from shared.errors import DependencyUnavailable
    from shared.rabbitmq_admin import ManagementClient
    from shared.topology_apply import vhost_of

    try:
        with ManagementClient(cfg.broker.management_url, timeout=DB_TIMEOUT_S) as mgmt:
            found = mgmt.queues(vhost_of(cfg.broker.url))
    except DependencyUnavailable as exc:
        return {"error": str(exc)}
    rows = sorted(
        ({"name": q["name"], "ready": int(q.get("messages_ready", 0) or 0),
          "unacked": int(q.get("messages_unacknowledged", 0) or 0),
          "consumers": int(q.get("consumers", 0) or 0)} for q in found),
        key=lambda q: q["name"],
    )
    return {"queues": rows}


async def gather(cfg: Settings, probes: list[Probe]) -> dict[str, Any]:
    """Everything ``amsctl status`` shows, as one JSON-ready dict."""
    from shared.config import DATABASES

    processes, queues, sagas, *outboxes = await asyncio.gather(
        _processes(probes), asyncio.to_thread(_queues, cfg), _sagas(cfg),
        *(_outbox(cfg, db) for db in DATABASES),
    )
    return {"processes": processes, "outbox": outboxes, **_split_queues(cfg, queues),
            "sagas": sagas}


def _split_queues(cfg: Settings, queues: dict[str, Any]) -> dict[str, Any]:
    """Work queues apart from their dead-letter queues; retry queues (as the topology names
    them) hidden unless they hold messages, which they do only while a retry waits."""
    from amsctl.dlq.model import is_dlq_name, work_queue_of
    from shared import topology

    if "error" in queues:
        return {"queues": queues, "dead_letters": queues}
    deployed = topology.deployed(
        topology.parse_retry_delays(cfg.worker.retry_delays), cfg.worker.partitions)
    retry = {q.name for q in deployed.queues if "x-message-ttl" in q.arguments}
    work, dead = [], []
    for q in queues["queues"]:
        if is_dlq_name(q["name"]):
            dead.append({"queue": q["name"], "consumer": work_queue_of(q["name"]),
                         "messages": q["ready"] + q["unacked"]})
        elif q["name"] not in retry or q["ready"] + q["unacked"]:
            work.append(q)
    return {"queues": {"queues": work}, "dead_letters": {"queues": dead}}


def exit_code(report: dict[str, Any]) -> int:
    errors = [report["queues"], report["sagas"], *report["outbox"]]
    if any("error" in part for part in errors):
        return EXIT_UNAVAILABLE
    return 0 if all(p["up"] for p in report["processes"]) else EXIT_FAILURE


@app.callback(invoke_without_command=True)
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    probe: Annotated[list[str] | None, typer.Option(
        "--probe", metavar="NAME=URL",
        help="Probe this process instead of the Procfile's (repeatable), e.g. "
        "auth=http://auth:8002/health.")] = None,
    procfile: Annotated[Path, typer.Option(
        "--procfile", help="Where the processes and their ports are listed.")] = Path("Procfile"),
) -> None:
    """Processes up, outbox backlog and age, queues, dead letters, parked rows, sagas."""
    cfg = settings()
    if probe:
        probes = [parse_probe(p) for p in probe]
    else:
        probes = procfile_probes(procfile, cfg) if procfile.exists() else []
    report = asyncio.run(gather(cfg, probes))
    if as_json:
        print_json(report)
    else:
        from amsctl.status_render import render

        console.print(render(report))
    raise typer.Exit(exit_code(report))
