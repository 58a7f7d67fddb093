"""The alert rules and the dashboard: valid for Prometheus (``promtool``), the rules behave as
their unit tests say, and every product metric they read is one the processes export."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from litestar import get
from litestar.testing import TestClient
from prometheus_client import REGISTRY
from prometheus_client.metrics_core import Metric

import outbox.metrics
import workers.runtime.metrics
import workers.saga
from shared.http import api_app
from tests.observability_names import (
    DASHBOARDS,
    PROMETHEUS,
    alert_expressions,
    dashboard_expressions,
    referenced,
)

assert outbox.metrics and workers.runtime.metrics and workers.saga  # registered on import


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool not found: scripts/install.sh installs it (Debian's prometheus package) "
            "when run as root; or `apt-get install prometheus`"
        )
    return path


def _run(*args: str, cwd: Path = PROMETHEUS) -> str:
    done = subprocess.run(
        [promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def test_prometheus_config_and_rules_are_valid() -> None:
    output = _run("check", "config", "prometheus.yml")
    assert "SUCCESS: 1 rule files found" in output
    assert f"SUCCESS: {len(alert_expressions())} rules found" in output


def test_alert_rules_pass_their_unit_tests() -> None:
    output = _run("test", "rules", "alerts.test.yml")
    assert "SUCCESS" in output


def test_every_alert_has_a_case_that_fires_and_one_that_does_not() -> None:
    cases = yaml.safe_load((PROMETHEUS / "alerts.test.yml").read_text())["tests"]
    checks = [check for case in cases for check in case["alert_rule_test"]]
    firing = {check["alertname"] for check in checks if check.get("exp_alerts")}
    silent = {check["alertname"] for check in checks if not check.get("exp_alerts")}
    assert firing == silent == set(alert_expressions())


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    exprs = dashboard_expressions()
    assert len(exprs) >= 30
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": expr} for i, expr in enumerate(exprs.values())
    ]}]}
    (tmp_path / "dashboard-queries.yml").write_text(yaml.safe_dump(rules))
    _run("check", "rules", "dashboard-queries.yml", cwd=tmp_path)


def test_dashboard_covers_the_system() -> None:
    dashboard = json.loads((DASHBOARDS / "ams-overview.json").read_text())
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows == [
        "API (RED)", "Outbox", "Consumers", "OCR", "Deletion saga", "Processes and broker",
    ]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


@get("/item", operation_id="item", sync_to_thread=False)
def _item() -> dict[str, str]:
    return {}


def _exported_names() -> set[str]:
    """Sample names the product's registries can expose (HTTP ones after one request)."""
    app = api_app(title="auth", route_handlers=[_item], ready_checks={}, max_body_bytes=1024)
    with TestClient(app) as client:
        assert client.get("/item").status_code == 200
    names: set[str] = set()
    metric: Metric
    for metric in REGISTRY.collect():
        names.add(metric.name)
        if metric.type == "counter":
            names.add(f"{metric.name}_total")
        for suffix in ("_bucket", "_sum", "_count"):
            if metric.type == "histogram":
                names.add(metric.name + suffix)
    return names


def test_alerts_and_dashboard_read_only_exported_metrics() -> None:
    wanted = referenced("ams_")
    assert {"ams_outbox_oldest_unsent_age_seconds", "ams_worker_messages_handled_total"} <= wanted
    missing = wanted - _exported_names()
    assert not missing, f"no process exports {sorted(missing)}"
