"""CI's short run of the cluster harness (``make test-cluster`` runs every scenario).

One deployment from ``docker-compose.yml`` (cluster profile): every process in its own
network namespace, a private PostgreSQL and Redis, three RabbitMQ nodes. Under steady load
from the client namespace, the node leading the work queues is killed (then restarted), then
the node leading them is cut off from the other nodes and every client for 20 s (then
healed), then a memory alarm blocks every publisher for 20 s. After each: nothing lost,
nothing applied twice, order per aggregate kept, nothing stuck, every dead letter explained,
backlog back to zero. About three minutes on two cores. Needs root (namespaces), as CI has
here. A failing scenario prints where its logs were kept.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.net import NETNS_ETC, NETNS_RUN
from tests.cluster.run import QUICK, SCENARIOS, Harness, harness, keep_logs

pytestmark = pytest.mark.timeout(1200)

def _leftovers(prefix: str) -> list[str]:
    namespaces = [p.name for p in NETNS_RUN.glob(f"{prefix}-*")] if NETNS_RUN.is_dir() else []
    etc = [p.name for p in NETNS_ETC.glob(f"{prefix}-*")] if NETNS_ETC.is_dir() else []
    return namespaces + etc


@pytest.fixture(scope="module")
def cluster() -> Iterator[Harness]:
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("rabbitmq-server") is None:
        reason = "the cluster harness needs root, iproute2 and the RabbitMQ server"
        if os.environ.get("CI"):  # CI runs as root with both: a missing one is a failure there
            pytest.fail(reason)
        pytest.skip(reason)
    with harness(quick=True) as h:
        base, prefix = h.deploy.base, h.deploy.prefix
        yield h
    assert _leftovers(prefix) == [], "namespaces or /etc/netns entries left behind"
    assert not Path(base).exists(), "data directories left behind"


@pytest.mark.parametrize("name", QUICK)
def test_fault_loses_nothing_and_recovers(cluster: Harness, name: str) -> None:
    scenario = next(s for s in SCENARIOS if s.name == name)
    cluster.notes = {}
    result = cluster.run(scenario, warmup_s=6, after_s=6)
    print(json.dumps(result))
    if not result["passed"]:
        print(json.dumps({"logs": str(keep_logs(cluster.deploy))}))
    assert result["problems"] == []
    assert result["lost"] == 0
    assert result["duplicated"] == 0
    assert result["out_of_order"] == 0
    assert result["recovery_s"] is not None
    assert result["accepted"].get("register", 0) > 0, "the load did not reach the APIs"
