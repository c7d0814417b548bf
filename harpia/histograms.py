"""Latency histograms with fixed buckets, in the Prometheus sense, cheap enough to leave on.

Three are kept per app (``harpia(latency_histograms=False)`` turns them off):

* ``upgrade``: from accepting the TCP connection to the 101 written (the request head,
  the upgrade hook and its ``await`` included);
* ``handler``: the ``message`` handler's own time, *sampled*: one message in
  ``HANDLER_SAMPLE`` across the process is timed, in the frame engine (C), so that timing
  costs nothing on the others.  Counts are samples; the distribution is what it measures.
  For an ``async def`` handler, the time until it first waits;
* ``publish``: from ``publish`` to the end of the loop turn's writes, when the last local
  subscriber's frame has been handed to the kernel (one observation per publish that
  reached a subscriber).
"""
from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from collections.abc import Iterable
from typing import Any

__all__ = ["Histogram", "Latencies", "LATENCY_BUCKETS", "HANDLER_SAMPLE"]

#: Upper bounds in seconds, 10 us to 10 s: a message handler lives at the low end, an
#: upgrade with an authentication round trip at the high one.
LATENCY_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                   0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: One message handler call in this many is timed (the engine's mask is this minus one).
HANDLER_SAMPLE = 64


class Histogram:
    """Counts per bucket (not cumulative until exported), their sum and count."""

    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: Iterable[float] = LATENCY_BUCKETS) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)      # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds
        self.count += 1

    def observe_ns(self, nanoseconds: int) -> None:
        """What the frame engine calls with a handler's duration."""
        self.observe(nanoseconds * 1e-9)

    def snapshot(self) -> dict[str, Any]:
        return {"bounds": list(self.bounds), "counts": list(self.counts), "sum": self.sum,
                "count": self.count}


def add_snapshots(snapshots: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """The sum of histograms with the same buckets (the workers' ones)."""
    result: dict[str, Any] | None = None
    for snap in snapshots:
        if result is None:
            result = {"bounds": snap["bounds"], "counts": list(snap["counts"]), "sum": snap["sum"],
                      "count": snap["count"]}
            continue
        result["counts"] = [a + b for a, b in zip(result["counts"], snap["counts"])]
        result["sum"] += snap["sum"]
        result["count"] += snap["count"]
    return result


def prometheus_histogram(name: str, help_text: str, snap: dict[str, Any]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
    cumulative = 0
    for bound, count in zip(snap["bounds"], snap["counts"]):
        cumulative += count
        lines.append(f'{name}_bucket{{le="{bound:g}"}} {cumulative}')
    cumulative += snap["counts"][-1]
    lines += [f'{name}_bucket{{le="+Inf"}} {cumulative}', f"{name}_sum {snap['sum']:.9g}",
              f"{name}_count {snap['count']}"]
    return lines


#: Metric name (after the prefix) and help text of each histogram.
HISTOGRAM_HELP = {
    "upgrade": ("upgrade_seconds", "From TCP accept to the 101 written."),
    "handler": ("message_handler_seconds",
                f"Message handler duration, sampled (one message in {HANDLER_SAMPLE})."),
    "publish": ("publish_seconds", "From publish to the last local subscriber's write."),
}


class Latencies:
    """The app's three histograms, and the bookkeeping of publishes in flight."""

    __slots__ = ("upgrade", "handler", "publish", "_published", "handler_timer")

    def __init__(self) -> None:
        self.upgrade = Histogram()
        self.handler = Histogram()
        self.publish = Histogram()
        #: ``handler.observe_ns``, bound once: every connection holds it, so one object
        #: shared by all instead of a bound method (~70 B) per open connection.
        self.handler_timer = self.handler.observe_ns
        self._published: list[float] = []

    def published(self) -> None:
        """A publish reached subscribers: its frames are written when the loop turn's
        output is flushed, which was scheduled before this callback."""
        if not self._published:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:        # a publish from outside the loop: nothing to time
                return
            loop.call_soon(self._written)
        self._published.append(time.perf_counter())

    def _written(self) -> None:
        now = time.perf_counter()
        observe = self.publish.observe
        for started in self._published:
            observe(now - started)
        self._published.clear()

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {"upgrade": self.upgrade.snapshot(), "handler": self.handler.snapshot(),
                "publish": self.publish.snapshot()}


def prometheus_latencies(snapshot: dict[str, dict[str, Any]], prefix: str = "harpia") -> str:
    lines: list[str] = []
    for key, (name, help_text) in HISTOGRAM_HELP.items():
        if key in snapshot:
            lines += prometheus_histogram(f"{prefix}_{name}", help_text, snapshot[key])
    return "\n".join(lines) + "\n" if lines else ""
