"""harpia's metrics as a ``prometheus_client`` collector (``pip install 'harpia[prometheus]'``).

    from prometheus_client import REGISTRY
    from harpia.prometheus import HarpiaCollector

    REGISTRY.register(HarpiaCollector(app))

For apps that already expose metrics with ``prometheus_client``: each scrape reads the
same figures as ``app.metrics_text()`` (the totals of all the workers under
``workers=N``), under the same names.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from .histograms import HISTOGRAM_HELP
from .stats import _HELP as HELP

if TYPE_CHECKING:
    from .app import App

__all__ = ["HarpiaCollector"]


class HarpiaCollector(Collector):
    """Collects ``app``'s counters, gauges and latency histograms at each scrape."""

    def __init__(self, app: App, prefix: str = "harpia") -> None:
        self.app = app
        self.prefix = prefix

    def collect(self) -> Iterator[Any]:
        stats, histograms = self.app.metrics_totals()
        prefix = self.prefix
        for name, (kind, text) in HELP.items():
            family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            yield family(f"{prefix}_{name}", text, value=stats[name])
        closes = CounterMetricFamily(f"{prefix}_closes", "Connections closed, by close code.",
                                     labels=["code"])
        for code, count in stats["closes_by_code"].items():
            closes.add_metric([str(code)], count)
        yield closes
        failures = CounterMetricFamily(f"{prefix}_handshake_failures",
                                       "Refused upgrades, by HTTP status.", labels=["status"])
        for status, count in stats["handshake_failures_by_status"].items():
            failures.add_metric([str(status)], count)
        yield failures
        topics = GaugeMetricFamily(f"{prefix}_topic_subscribers",
                                   "Subscribers per topic in this process.", labels=["topic"])
        for topic, count in stats["topics"].items():
            topics.add_metric([topic], count)
        yield topics
        for key, snap in histograms.items():
            name, text = HISTOGRAM_HELP[key]
            cumulative = 0
            buckets = []
            for bound, count in zip(snap["bounds"], snap["counts"]):
                cumulative += count
                buckets.append((f"{bound:g}", cumulative))
            buckets.append(("+Inf", cumulative + snap["counts"][-1]))
            yield HistogramMetricFamily(f"{prefix}_{name}", text, buckets=buckets,
                                        sum_value=snap["sum"])
