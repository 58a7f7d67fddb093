"""The compose broker's configuration boots: a private RabbitMQ node started with
infra/rabbitmq/rabbitmq.conf, enabled_plugins and the definitions directory (ports moved
to free ones, paths to a temporary directory) imports the definitions, lets guest in from
a non-loopback address, and serves the management API and Prometheus metrics.

The shared broker is not touched: the node has its own name, ports and data directory,
and is stopped at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import aio_pika
import httpx
import pytest

from tests.observability_names import referenced

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra" / "rabbitmq"
SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _outside_address() -> str:
    """An address of this machine that is not loopback (guest must work from it)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect(("192.0.2.1", 9))  # no packet is sent for a UDP connect
            return str(sock.getsockname()[0])
    except OSError:  # no route out: the host name's address
        return socket.gethostbyname(socket.gethostname())


class Node:
    def __init__(self, amqp: int, http: int, prometheus: int) -> None:
        self.amqp, self.http, self.prometheus = amqp, http, prometheus


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    binary = SERVER if SERVER.exists() else Path(shutil.which("rabbitmq-server") or "")
    assert binary.is_file(), "rabbitmq-server is not installed (scripts/services.sh needs it)"
    base = tmp_path_factory.mktemp("rabbit")
    defs = base / "definitions.d"
    defs.mkdir()
    shutil.copy(INFRA / "definitions.d" / "00-users.json", defs / "00-users.json")
    shutil.copy(INFRA / "definitions.json", defs / "definitions.json")
    shutil.copy(INFRA / "enabled_plugins", base / "enabled_plugins")
    ports = Node(_free_port(), _free_port(), _free_port())
    conf = (INFRA / "rabbitmq.conf").read_text()
    conf = conf.replace("/etc/rabbitmq/definitions.d", str(defs))
    conf = re.sub(r"^listeners\.tcp\.default = \d+", f"listeners.tcp.default = {ports.amqp}",
                  conf, flags=re.M)
    conf = re.sub(r"^management\.tcp\.port = \d+", f"management.tcp.port = {ports.http}",
                  conf, flags=re.M)
    conf = re.sub(r"^prometheus\.tcp\.port = \d+", f"prometheus.tcp.port = {ports.prometheus}",
                  conf, flags=re.M)
    conf = re.sub(r"^disk_free_limit\.absolute = .*$", "disk_free_limit.absolute = 50MB",
                  conf, flags=re.M)
    (base / "rabbitmq.conf").write_text(conf)
    env = {
        **os.environ,
        "HOME": str(base),
        "RABBITMQ_NODENAME": f"ams-boot-{os.getpid()}@localhost",
        "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
        "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
        "RABBITMQ_LOG_BASE": str(base / "log"),
        "RABBITMQ_PID_FILE": str(base / "node.pid"),
        "RABBITMQ_DIST_PORT": str(_free_port()),
    }
    log = (base / "stdout.log").open("w")
    proc = subprocess.Popen(
        [str(binary)], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert proc.poll() is None, (base / "stdout.log").read_text()
            try:
                url = f"http://127.0.0.1:{ports.http}/api/overview"
                if httpx.get(url, auth=("guest", "guest"), timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("the node did not serve its management API within 90 s")
        yield ports
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


def _api(node: Node, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{node.http}/api/{path}", auth=("guest", "guest"),
                     timeout=5)


def test_guest_is_an_administrator(node: Node) -> None:
    whoami = _api(node, "whoami").json()
    assert whoami["name"] == "guest"
    assert "administrator" in whoami["tags"]
    permissions = _api(node, "permissions/%2F/guest").json()
    assert (permissions["configure"], permissions["write"], permissions["read"]) == (
        ".*", ".*", ".*"
    )


def test_definitions_are_imported_at_boot(node: Node) -> None:
    definitions = json.loads((INFRA / "definitions.json").read_text())
    assert any(e["name"] == "events" for e in definitions["exchanges"])
    for exchange in definitions["exchanges"]:
        vhost = quote(exchange["vhost"], safe="")
        found = _api(node, f"exchanges/{vhost}/{quote(exchange['name'], safe='')}")
        assert found.status_code == 200, exchange["name"]
        assert found.json()["type"] == exchange["type"]
    for queue in definitions.get("queues", []):
        vhost = quote(queue["vhost"], safe="")
        assert _api(node, f"queues/{vhost}/{quote(queue['name'], safe='')}").status_code == 200


def test_guest_connects_over_amqp_from_another_host(node: Node) -> None:
    async def connect() -> None:
        url = f"amqp://guest:guest@{_outside_address()}:{node.amqp}/"
        connection = await aio_pika.connect(url, timeout=10)
        await connection.close()

    asyncio.run(connect())


def test_prometheus_metrics_are_served(node: Node) -> None:
    response = httpx.get(f"http://127.0.0.1:{node.prometheus}/metrics", timeout=5)
    assert response.status_code == 200
    assert "rabbitmq_" in response.text


def test_broker_metrics_read_by_the_alerts_and_dashboard_exist(node: Node) -> None:
    """Every ``rabbitmq_`` name in deploy/ is served, per queue where Prometheus asks for it
    (deploy/prometheus/prometheus.yml scrapes /metrics and /metrics/detailed)."""
    base = f"http://127.0.0.1:{node.prometheus}"
    families = [("family", "queue_coarse_metrics"), ("family", "queue_consumer_count")]
    sample = 'rabbitmq_detailed_queue_messages_ready{vhost="/",queue="profiles.dlq"}'
    deadline = time.monotonic() + 60  # queues report their figures every few seconds
    while True:
        detailed = httpx.get(f"{base}/metrics/detailed", params=families, timeout=10).text
        if sample in detailed or time.monotonic() > deadline:
            break
        time.sleep(1)
    served = httpx.get(f"{base}/metrics", timeout=10).text + detailed
    names = {line.split("{")[0].split(" ")[0] for line in served.splitlines()
             if line and not line.startswith("#")}
    wanted = referenced("rabbitmq_")
    assert "rabbitmq_detailed_queue_messages_ready" in wanted
    assert wanted <= names, sorted(wanted - names)
    assert sample in detailed
