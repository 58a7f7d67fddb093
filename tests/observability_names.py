"""Metric names the deployment files (alert rules, dashboard) refer to."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
_NAME = re.compile(r"\b((?:ams|rabbitmq)_[a-z0-9_]+)\b")


def alert_expressions() -> dict[str, str]:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"]}


def dashboard_expressions() -> dict[str, str]:
    """``"<dashboard>: <panel> (<refId>)"`` -> PromQL, Grafana's ``$__rate_interval`` as 5m."""
    exprs = {}
    for path in sorted(DASHBOARDS.glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                key = f"{path.stem}: {panel['title']} ({target['refId']})"
                exprs[key] = target["expr"].replace("$__rate_interval", "5m")
    return exprs


def referenced(prefix: str) -> set[str]:
    """Every ``prefix``-metric name in the alert rules and dashboards."""
    texts = [*alert_expressions().values(), *dashboard_expressions().values()]
    return {name for text in texts for name in _NAME.findall(text) if name.startswith(prefix)}
