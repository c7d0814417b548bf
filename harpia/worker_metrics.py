"""Metrics that are true with ``workers=N``: every scrape answers for all the workers.

Workers share no memory, and a scrape of ``/metrics`` lands on whichever worker the
kernel picks.  So each worker writes its counters to a file of its own in a directory the
supervisor made (atomically: a new file renamed over the old one), once a second and
whenever it is scraped; the worker that answers a scrape adds up every file.

* Gauges (open connections, subscribers per topic) are summed over the live workers.
* Counters never go backwards: a worker's file only ever holds larger counts, and when a
  worker exits (a crash, a reload) the supervisor keeps its file with the gauges zeroed, so
  what it counted stays in the totals.
* Per-worker series carry a ``worker`` label (the slot, 0..N-1) and a ``pid`` label.

The price is freshness: another worker's figures are at most ``PUBLISH_EVERY`` old.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from .histograms import add_snapshots, prometheus_latencies
from .stats import ENGINE_COUNTERS, prometheus_text

__all__ = ["WorkerMetrics", "make_directory", "retire_file", "remove_directory", "PUBLISH_EVERY"]

#: Seconds between a worker's writes of its counters when nobody scrapes it.
PUBLISH_EVERY = 1.0

_COUNTERS = ("connections_opened", "subscriptions_refused", *ENGINE_COUNTERS)
#: Gauges of this moment: summed over the live workers, zero for a worker that exited.
_GAUGES = ("connections_open", "http_connections_open", "topic_count", "subscriptions")
_PER_WORKER = (("connections_open", "gauge", "Open WebSocket connections of one worker."),
               ("connections_opened", "counter", "WebSocket connections opened by one worker."),
               ("messages_in", "counter", "Messages received by one worker."),
               ("messages_out", "counter", "Messages queued for sending by one worker."))


def make_directory() -> str:
    return tempfile.mkdtemp(prefix="harpia-metrics-")


def remove_directory(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _file(directory: str, index: int, pid: int) -> Path:
    return Path(directory) / f"worker-{index}-{pid}.json"


def _write(path: Path, content: dict[str, Any]) -> None:
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps(content))
    os.replace(temporary, path)


def retire_file(directory: str, index: int, pid: int) -> None:
    """The supervisor, once a worker has exited: keep its counters, zero its gauges."""
    path = _file(directory, index, pid)
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    content["retired"] = True
    for name in _GAUGES:
        content["stats"][name] = 0
    content["stats"]["topics"] = {}
    _write(path, content)


class WorkerMetrics:
    """One worker's side: publish its own figures, add up everybody's on a scrape."""

    __slots__ = ("directory", "index", "pid", "path")

    def __init__(self, directory: str, index: int) -> None:
        self.directory = directory
        self.index = index
        self.pid = os.getpid()
        self.path = _file(directory, index, self.pid)

    def publish(self, stats: dict[str, Any], latency: dict[str, Any] | None = None) -> None:
        _write(self.path, {"worker": self.index, "pid": self.pid, "retired": False, "stats": stats,
                           "latency": latency})

    def collect(self) -> list[dict[str, Any]]:
        """Every worker's last figures, this one's included (retired workers too)."""
        found = []
        for path in sorted(Path(self.directory).glob("worker-*.json")):
            try:
                found.append(json.loads(path.read_text()))
            except (OSError, ValueError):      # removed meanwhile: the directory is going away
                continue
        return found

    def totals(self, own: dict[str, Any], latency: dict[str, Any] | None, topics: int = 100
               ) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
        """Publish this worker's figures, then add up everybody's: the stats (per-topic
        counts for at most ``topics`` topics), the latency histograms, and each worker's
        own record (for per-worker series)."""
        self.publish(own, latency)
        workers = self.collect()
        histograms = {}
        for key in ("upgrade", "handler", "publish"):
            summed = add_snapshots(w["latency"][key] for w in workers if w.get("latency"))
            if summed is not None:
                histograms[key] = summed
        return total(workers, topics), histograms, workers

    def prometheus_text(self, own: dict[str, Any], latency: dict[str, Any] | None = None,
                        topics: int = 0, prefix: str = "harpia") -> str:
        stats, histograms, workers = self.totals(own, latency, topics)
        text = prometheus_text(stats, prefix) + prometheus_latencies(histograms, prefix)
        lines = [f"# HELP {prefix}_workers Worker processes serving now.",
                 f"# TYPE {prefix}_workers gauge",
                 f"{prefix}_workers {sum(1 for w in workers if not w['retired'])}"]
        live = [w for w in workers if not w["retired"]]
        for name, kind, help_text in _PER_WORKER:
            metric = f"{prefix}_worker_{name}" + ("_total" if kind == "counter" else "")
            lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} {kind}"]
            lines += [f'{metric}{{worker="{w["worker"]}",pid="{w["pid"]}"}} {w["stats"][name]}'
                      for w in live]
        return text + "\n".join(lines) + "\n"


def total(workers: list[dict[str, Any]], topics: int = 100) -> dict[str, Any]:
    """The sum of the workers' ``app.stats()``, in the same shape (subscribers for at most
    ``topics`` topics, as ``app.stats(topics=...)``)."""
    closes: Counter[int] = Counter()
    failures: Counter[int] = Counter()
    per_topic: Counter[str] = Counter()
    summed: Counter[str] = Counter()
    for worker in workers:
        stats = worker["stats"]
        for name in _COUNTERS:
            summed[name] += stats.get(name, 0)
        for name in _GAUGES:
            summed[name] += stats.get(name, 0)
        closes.update({int(code): n for code, n in stats.get("closes_by_code", {}).items()})
        failures.update({int(s): n for s, n in stats.get("handshake_failures_by_status", {}).items()})
        per_topic.update(stats.get("topics", {}))
    result: dict[str, Any] = {name: summed[name] for name in (*_GAUGES, *_COUNTERS)}
    result["closes_by_code"] = dict(sorted(closes.items()))
    result["handshake_failures_by_status"] = dict(sorted(failures.items()))
    result["topics"] = dict(sorted((t, n) for t, n in per_topic.items() if n)[:topics])
    return result
