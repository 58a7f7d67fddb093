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


SERIES = (
    Series("relayed", "Events relayed", "outbox_published_total", "rate", "events/s"),
    Series("handled", "Consumer throughput", "ams_worker_messages_handled_total", "rate",
           "messages/s"),
    Series("failures", "Consumer failures", "ams_worker_messages_failed_total", "rate",
           "failures/s", bad=True),
    Series("dead_letters", "Dead letters", "ams_worker_messages_dead_lettered_total", "rate",
           "dead letters/s", bad=True),
    Series("backlog_age", "Oldest unsent event (backlog age)",
           "outbox_oldest_unsent_age_seconds", "gauge", "seconds", bad=True),
    Series("backlog", "Outbox backlog", "outbox_backlog", "gauge", "events"),
)


def parse_targets(spec: str) -> dict[str, str]:
    """``name=url,name=url`` -> ``{name: url}`` (blank entries ignored)."""
    targets: dict[str, str] = {}
    for part in spec.split(","):
        name, sep, url = part.strip().partition("=")
        if sep and name.strip() and url.strip():
            targets[name.strip()] = url.strip()
    return targets


def summarise(text: str, wanted: Iterable[str]) -> dict[str, float]:
    """Sum of every sample of each wanted family in one scrape (gauges: the largest)."""
    names = set(wanted)
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        base = family.name
        for sample in family.samples:
            name = sample.name
            if name not in names and base not in names:
                continue
            if name.endswith(("_created", "_bucket")):
                continue
            key = name if name in names else base
            if family.type == "gauge":
                totals[key] = max(totals.get(key, float("-inf")), sample.value)
            else:
                totals[key] = totals.get(key, 0.0) + sample.value
    return totals


@dataclass
class Sample:
    at: float
    values: dict[str, float]
    """Counters as running totals (restarts bridged), gauges as scraped."""
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
        counters = {s.metric for s in SERIES if s.kind == "rate"}
        for name, scraped in zip(self.targets, results, strict=True):
            up[name] = scraped is not None
            for metric, value in (scraped or {}).items():
                if metric in counters:
                    self._add_counter(name, metric, value)
                else:
                    gauges[metric] = max(gauges.get(metric, value), value)
        sample = Sample(now, {**self._totals, **gauges}, up)
        self.samples.append(sample)
        while self.samples and self.samples[0].at < now - WINDOW_S:
            self.samples.popleft()
        return sample

    def _add_counter(self, target: str, metric: str, value: float) -> None:
        previous = self._last_raw.get((target, metric))
        # A counter that went down belongs to a restarted process: all of it is new.
        increase = value if previous is None or value < previous else value - previous
        if previous is None:
            increase = 0.0  # the first scrape only sets the baseline
        self._last_raw[(target, metric)] = value
        self._totals[metric] = self._totals.get(metric, 0.0) + increase

    async def _fetch(self, http: httpx.AsyncClient, url: str) -> dict[str, float] | None:
        try:
            response = await http.get(url)
            response.raise_for_status()
        except httpx.HTTPError:
            return None
        return summarise(response.text, (s.metric for s in SERIES))

    def points(self, series: Series) -> list[tuple[float, float]]:
        """``(time, value)`` per sample: per-second rates between samples, or gauges."""
        samples = list(self.samples)
        if series.kind == "gauge":
            return [(s.at, s.values[series.metric]) for s in samples
                    if series.metric in s.values]
        out = []
        for before, after in itertools.pairwise(samples):
            if series.metric in after.values and after.at > before.at:
                delta = after.values[series.metric] - before.values.get(series.metric, 0.0)
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


WIDTH, HEIGHT, PAD_LEFT, PAD_BOTTOM, PAD_TOP = 480, 180, 52, 24, 12


def chart(history: MetricsHistory, series: Series, now: float | None = None) -> Chart:
    """The polyline of one series over the last hour, scaled into the SVG box."""
    now = time.time() if now is None else now
    points = [(t, v) for t, v in history.points(series) if t >= now - WINDOW_S]
    peak = max((v for _, v in points), default=0.0)
    top = peak if peak > 0 else 1.0
    inner_w, inner_h = WIDTH - PAD_LEFT - 4, HEIGHT - PAD_BOTTOM - PAD_TOP
    coords = []
    for t, v in points:
        x = PAD_LEFT + inner_w * (1 - (now - t) / WINDOW_S)
        y = PAD_TOP + inner_h * (1 - v / top)
        coords.append(f"{x:.1f},{y:.1f}")
    covers = min(WINDOW_S, now - history.started_at)
    return Chart(series, " ".join(coords), points[-1][1] if points else None, peak, covers,
                 not points)


def charts(history: MetricsHistory) -> list[Chart]:
    now = time.time()
    return [chart(history, s, now) for s in SERIES]
