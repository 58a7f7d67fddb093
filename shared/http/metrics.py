"""Prometheus metrics: ``GET /metrics`` and the request metrics middleware's configuration."""

from __future__ import annotations

import re

from litestar.plugins.prometheus import PrometheusConfig, PrometheusController


class MetricsController(PrometheusController):
    """``GET /metrics``: Prometheus text of this process (requests by route template, status)."""

    path = "/metrics"
    include_in_schema = False


def metrics_config(title: str) -> PrometheusConfig:
    """Request count and latency per method, route template and status; ops routes excluded."""
    app_name = re.sub(r"[^a-z0-9_]", "_", title.lower())
    return PrometheusConfig(
        app_name=app_name, prefix="ams_http", group_path=True,
        exclude=["^/metrics$", "^/health$", "^/ready$"],
    )
