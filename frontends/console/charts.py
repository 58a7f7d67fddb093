"""The console's picture of the last hour, from the system's own Prometheus metrics.

A background task scrapes the relay's and the workers' ``/metrics`` every
``CONSOLE_SCRAPE_INTERVAL_S`` and keeps one hour of samples in memory: counters as running
totals (a process restart, which resets its counters, is detected and bridged), gauges as
they are. Charts are rates between consecutive samples, drawn as server-side SVG. The history
starts when the console started; a chart says so when it covers less than an hour.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

from shared.logging import get_logger

log = get_logger(__name__)

WINDOW_S = 3600.0


@dataclass(frozen=True)
class Series:
    """One chart: a metric family summed over every target and label."""

    key: str
    title: str
    metric: str
    kind: str
    """``rate`` (a counter, per second) or ``gauge`` (the largest value over targets)."""
    unit: str
    bad: bool = False
    where: tuple[tuple[str, str], ...] = ()
    """Only samples with these label values count."""


SERIES = (  # names checked against outbox/metrics.py and workers/runtime/metrics.py by a test
    Series("relayed", "Events relayed", "ams_outbox_published_total", "rate", "events/s"),
    Series("handled", "Consumer throughput", "ams_worker_messages_handled_total", "rate",
           "messages/s"),
    Series("failures", "Consumer failures", "ams_worker_messages_failed_total", "rate",
           "failures/s", bad=True),
    Series("dead_letters", "Dead letters", "ams_worker_messages_failed_total", "rate",
           "dead letters/s", bad=True, where=(("outcome", "dead_lettered"),)),
    Series("backlog_age", "Oldest unsent event (backlog age)",
           "ams_outbox_oldest_unsent_age_seconds", "gauge", "seconds", bad=True),
    Series("backlog", "Outbox backlog", "ams_outbox_backlog_events", "gauge", "events"),
)


def parse_targets(spec: str) -> dict[str, str]:
    """``name=url,name=url`` -> ``{name: url}`` (blank entries ignored)."""
    targets: dict[str, str] = {}
    for part in spec.split(","):
        name, sep, url = part.strip().partition("=")
        if sep and name.strip() and url.strip():
            targets[name.strip()] = url.strip()
    return targets


def summarise(text: str, series: Iterable[Series] = SERIES) -> dict[str, float]:
    """One scrape as ``{series key: value}``: counters summed over their samples, gauges the
    largest (several relay copies each report their own backlog age)."""
    by_metric: dict[str, list[Series]] = {}
    for one in series:
        by_metric.setdefault(one.metric, []).append(one)
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            for one in by_metric.get(sample.name, ()):
                if any(sample.labels.get(k) != v for k, v in one.where):
                    continue
                if one.kind == "gauge":
                    totals[one.key] = max(totals.get(one.key, float("-inf")), sample.value)
                else:
                    totals[one.key] = totals.get(one.key, 0.0) + sample.value
    return totals


@dataclass
class Sample:
    at: float
    values: dict[str, float]
    """By series key: counters as running totals (restarts bridged), gauges as scraped."""
    up: dict[str, bool]


@dataclass
class MetricsHistory:
    """The last hour of samples, and the scraping that fills it."""

    targets: Mapping[str, str]
    interval_s: float
    samples: deque[Sample] = field(default_factory=deque)
    started_at: float = field(default_factory=time.time)
    _last_raw: dict[tuple[str, str], float] = field(default_factory=dict)
    _totals: dict[str, float] = field(default_factory=dict)

    async def scrape_once(self, http: httpx.AsyncClient, now: float | None = None) -> Sample:
        now = time.time() if now is None else now
        results = await asyncio.gather(*(self._fetch(http, url) for url in self.targets.values()))
        gauges: dict[str, float] = {}
        up: dict[str, bool] = {}
        counters = {s.key for s in SERIES if s.kind == "rate"}
        for name, scraped in zip(self.targets, results, strict=True):
            up[name] = scraped is not None
            for key, value in (scraped or {}).items():
                if key in counters:
                    self._add_counter(name, key, value)
                else:
                    gauges[key] = max(gauges.get(key, value), value)
        sample = Sample(now, {**self._totals, **gauges}, up)
        self.samples.append(sample)
        while self.samples and self.samples[0].at < now - WINDOW_S:
            self.samples.popleft()
        return sample

    def _add_counter(self, target: str, key: str, value: float) -> None:
        previous = self._last_raw.get((target, key))
        # A counter that went down belongs to a restarted process: all of it is new.
        increase = value if previous is None or value < previous else value - previous
        if previous is None:
            increase = 0.0  # the first scrape only sets the baseline
        self._last_raw[(target, key)] = value
        self._totals[key] = self._totals.get(key, 0.0) + increase

    async def _fetch(self, http: httpx.AsyncClient, url: str) -> dict[str, float] | None:
        try:
            response = await http.get(url)
            response.raise_for_status()
        except httpx.HTTPError:
            return None
        return summarise(response.text)

    def points(self, series: Series) -> list[tuple[float, float]]:
        """``(time, value)`` per sample: per-second rates between samples, or gauges."""
        samples = list(self.samples)
        if series.kind == "gauge":
            return [(s.at, s.values[series.key]) for s in samples if series.key in s.values]
        out = []
        for before, after in itertools.pairwise(samples):
            if series.key in after.values and after.at > before.at:
                delta = after.values[series.key] - before.values.get(series.key, 0.0)
                out.append((after.at, max(0.0, delta) / (after.at - before.at)))
        return out

    def latest_up(self) -> dict[str, bool]:
        return dict(self.samples[-1].up) if self.samples else {}

    async def run(self) -> None:
        """Scrape forever (cancelled at shutdown)."""
        async with httpx.AsyncClient(timeout=min(5.0, self.interval_s)) as http:
            while True:
                try:
                    await self.scrape_once(http)
                except Exception as exc:  # a bad scrape must not end the history
                    log.warning("console.scrape_failed", error=str(exc)[:300])
                await asyncio.sleep(self.interval_s)


@dataclass(frozen=True)
class Chart:
    series: Series
    svg_points: str
    latest: float | None
    peak: float
    covers_s: float
    empty: bool
    span_s: float
    """The x axis: the last hour, or since the console started when that is shorter."""

    @property
    def axis_labels(self) -> tuple[str, str]:
        """The left end and the middle of the x axis, e.g. ``-60 min``, ``-30 min``."""
        def label(seconds: float) -> str:
            return f"-{seconds / 60:.0f} min" if seconds >= 120 else f"-{seconds:.0f} s"

        return label(self.span_s), label(self.span_s / 2)


WIDTH, HEIGHT, PAD_LEFT, PAD_BOTTOM, PAD_TOP = 480, 180, 64, 24, 12


def chart(history: MetricsHistory, series: Series, now: float | None = None) -> Chart:
    """The polyline of one series over the last hour, scaled into the SVG box."""
    now = time.time() if now is None else now
    covers = min(WINDOW_S, now - history.started_at)
    span = min(WINDOW_S, max(60.0, covers))
    points = [(t, v) for t, v in history.points(series) if t >= now - span]
    peak = max((v for _, v in points), default=0.0)
    top = peak if peak > 0 else 1.0
    inner_w, inner_h = WIDTH - PAD_LEFT - 4, HEIGHT - PAD_BOTTOM - PAD_TOP
    coords = []
    for t, v in points:
        x = PAD_LEFT + inner_w * (1 - (now - t) / span)
        y = PAD_TOP + inner_h * (1 - v / top)
        coords.append(f"{x:.1f},{y:.1f}")
    return Chart(series, " ".join(coords), points[-1][1] if points else None, peak, covers,
                 not points, span)


def charts(history: MetricsHistory) -> list[Chart]:
    now = time.time()
    return [chart(history, s, now) for s in SERIES]
