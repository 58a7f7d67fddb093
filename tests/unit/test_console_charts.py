"""The console's last-hour charts: scraping, counter restarts, rates, and the metric names."""

from __future__ import annotations

import asyncio

import httpx
from prometheus_client.metrics import MetricWrapperBase

import outbox.metrics
import workers.runtime.metrics
from frontends.console.charts import SERIES, MetricsHistory, chart, parse_targets, summarise

RELAY = """# HELP ams_outbox_published_total Events confirmed by the broker.
# TYPE ams_outbox_published_total counter
ams_outbox_published_total{{database="authdb"}} {a}
ams_outbox_published_total{{database="apidb"}} {b}
ams_outbox_published_created{{database="apidb"}} 1.7e9
# TYPE ams_outbox_oldest_unsent_age_seconds gauge
ams_outbox_oldest_unsent_age_seconds{{database="authdb"}} {age}
ams_outbox_oldest_unsent_age_seconds{{database="apidb"}} 0.5
"""
WORKER = """# TYPE ams_worker_messages_failed_total counter
ams_worker_messages_failed_total{consumer="profiles",outcome="retried"} 3
ams_worker_messages_failed_total{consumer="profiles",outcome="dead_lettered"} 2
"""


def test_the_series_are_metrics_the_relay_and_the_workers_export() -> None:
    exported: dict[str, tuple[str, ...]] = {}
    for module in (outbox.metrics, workers.runtime.metrics):
        for value in vars(module).values():
            if isinstance(value, MetricWrapperBase):
                for family in value.describe():
                    name = family.name + ("_total" if family.type == "counter" else "")
                    exported[name] = tuple(value._labelnames)
    for series in SERIES:
        assert series.metric in exported, series
        assert {k for k, _ in series.where} <= set(exported[series.metric]), series


def test_summarise_adds_counters_and_takes_the_largest_gauge() -> None:
    text = RELAY.format(a=3, b=4, age=2.5) + WORKER
    assert summarise(text) == {"relayed": 7.0, "backlog_age": 2.5, "failures": 5.0,
                               "dead_letters": 2.0}


def test_rates_survive_a_restarted_process_and_a_target_that_is_down() -> None:
    bodies = iter([RELAY.format(a=0, b=0, age=0), RELAY.format(a=10, b=10, age=1),
                   RELAY.format(a=5, b=0, age=0)])  # the relay restarted: counters reset

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.host == "down":
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, text=next(bodies))

    history = MetricsHistory(parse_targets("relay=http://relay/metrics, down=http://down/m, ,"),
                             interval_s=10)

    async def scrape() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as http:
            for at in (1000.0, 1010.0, 1020.0):
                await history.scrape_once(http, now=at)

    asyncio.run(scrape())
    relayed = next(s for s in SERIES if s.key == "relayed")
    assert history.points(relayed) == [(1010.0, 2.0), (1020.0, 0.5)]
    assert history.latest_up() == {"relay": True, "down": False}
    drawn = chart(history, relayed, now=1020.0)
    assert drawn.latest == 0.5 and drawn.peak == 2.0 and not drawn.empty
    assert len(drawn.svg_points.split()) == 2


def test_samples_older_than_an_hour_are_dropped() -> None:
    history = MetricsHistory({}, interval_s=10)

    async def scrape() -> None:
        async with httpx.AsyncClient() as http:
            for at in (0.0, 1800.0, 3700.0):
                await history.scrape_once(http, now=at)

    asyncio.run(scrape())
    assert [s.at for s in history.samples] == [1800.0, 3700.0]
