"""Scrape-time metrics: values other parts already keep (queue depth, auth cache hits, limiter failover...) read
when Prometheus scrapes, never on a request's path.

Anything can add its own with `ScrapeSources.watch(ScrapeMetric(...))`: a name, help, kind, label names and a
`read` function returning (label values, value) pairs. In one process a collector calls `read` at each scrape. Under
`--workers N` a scrape sees one worker only, so each worker copies its readings into the shared multiprocess files at
every scrape it serves and every `REFRESH_INTERVAL` seconds, and gauges combine across workers by their `mode`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger("tollgate.telemetry")

REFRESH_INTERVAL = 2.0
Readings = Iterable[tuple[tuple[str, ...], float]]
GaugeMode = Literal["livesum", "livemax", "livemin", "liveall", "sum", "max", "min", "all"]


@dataclass(frozen=True, slots=True)
class ScrapeMetric:
    """A metric whose values are read at scrape time. `name` has no `_total` (added for counters); `mode` says how
    workers' gauge values combine: `livesum` (a queue depth: the sum over live workers), `livemax` (a state flag)."""

    name: str
    help: str
    kind: Literal["counter", "gauge"]
    read: Callable[[], Readings]
    labels: tuple[str, ...] = ()
    mode: GaugeMode = "livesum"


class _Collector(Collector):
    def __init__(self, metrics: list[ScrapeMetric]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        for metric in self._metrics:
            family: CounterMetricFamily | GaugeMetricFamily
            if metric.kind == "counter":
                family = CounterMetricFamily(metric.name, metric.help, labels=metric.labels)
            else:
                family = GaugeMetricFamily(metric.name, metric.help, labels=metric.labels)
            for labels, value in _read(metric):
                family.add_metric(list(labels), value)
            yield family


def _read(metric: ScrapeMetric) -> Readings:
    try:
        return list(metric.read())
    except Exception:  # one broken source must not break the scrape
        log.exception("metric source %s failed", metric.name)
        return []


class ScrapeSources:
    """The scrape-time metrics of one process; `registry` None means multiprocess mode."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self._metrics: list[ScrapeMetric] = []
        self._shared: dict[str, Counter | Gauge] = {}
        self._last: dict[tuple[str, tuple[str, ...]], float] = {}
        self._multiprocess = registry is None
        if registry is not None:
            registry.register(_Collector(self._metrics))

    def watch(self, metric: ScrapeMetric) -> None:
        """Expose `metric` from now on, in place of one of the same name (a reloaded config's part replaces its
        predecessor's reading)."""
        for i, known in enumerate(self._metrics):
            if known.name == metric.name:
                self._metrics[i] = metric
                return
        self._metrics.append(metric)
        if self._multiprocess:
            self._shared[metric.name] = (
                Counter(metric.name, metric.help, metric.labels, registry=None)
                if metric.kind == "counter"
                else Gauge(metric.name, metric.help, metric.labels, registry=None, multiprocess_mode=metric.mode)
            )

    @property
    def names(self) -> list[str]:
        """The names watched, for tests and the dashboard check."""
        return [m.name for m in self._metrics]

    def refresh(self) -> None:
        """Multiprocess mode: copy this worker's readings into the shared files (a counter by what it grew)."""
        if not self._multiprocess:
            return
        for metric in self._metrics:
            shared = self._shared[metric.name]
            for labels, value in _read(metric):
                child = shared.labels(*labels) if labels else shared
                if isinstance(child, Gauge):
                    child.set(value)
                    continue
                key = (metric.name, labels)
                grown = value - self._last.get(key, 0.0)
                self._last[key] = value
                child.inc(grown if grown >= 0 else value)  # a reset source starts again from zero

    async def run(self) -> None:
        """Refresh every `REFRESH_INTERVAL` seconds until cancelled (multiprocess mode only)."""
        while self._multiprocess:
            self.refresh()
            await asyncio.sleep(REFRESH_INTERVAL)
