"""Counters of one app: what ``app.stats()`` returns and ``/metrics`` shows.

Per-message counters live in the frame engine (C integers on each connection, no cost
when nobody reads them); here they are summed over the open connections plus the totals
of the connections that already closed, and exported as a dict or as Prometheus text.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from ._counters import ClosedTotals
from ._frames import FrameEngine

__all__ = ["AppStats", "prometheus_text"]

#: The engine counters summed per app (attributes of FrameEngine).
ENGINE_COUNTERS = ("messages_in", "messages_out", "bytes_in", "bytes_out",
                   "backpressure_events", "dropped")


class AppStats:
    """Totals of the connections that closed, and the events that are not per message."""

    __slots__ = ("opened", "closes", "handshake_failures", "closed_totals",
                 "subscriptions_refused")

    def __init__(self) -> None:
        self.opened = 0
        self.subscriptions_refused = 0
        self.closes: Counter[int] = Counter()
        self.handshake_failures: Counter[int] = Counter()
        self.closed_totals = ClosedTotals()

    def connection_closed(self, connection: FrameEngine, code: int) -> None:
        # Runs for every connection that closes: no Counter arithmetic (a dict subclass
        # takes the slow path), the engine counters summed in C.
        closes = self.closes
        closes[code] = closes.get(code, 0) + 1
        self.closed_totals.add(connection)

    def snapshot(self, live: Iterable[object], subscribers: dict[str, int],
                 topic_count: int = 0, subscriptions: int = 0,
                 http_connections: int = 0) -> dict[str, Any]:
        closed = self.closed_totals
        totals = Counter({name: getattr(closed, name) for name in ENGINE_COUNTERS})
        open_now = 0
        for connection in live:
            open_now += 1
            for name in ENGINE_COUNTERS:
                totals[name] += getattr(connection, name, 0)
        return {
            "connections_open": open_now,
            "connections_opened": self.opened,
            "http_connections_open": http_connections,
            "closes_by_code": dict(sorted(self.closes.items())),
            "handshake_failures_by_status": dict(sorted(self.handshake_failures.items())),
            **{name: totals[name] for name in ENGINE_COUNTERS},
            "topic_count": topic_count,
            "subscriptions": subscriptions,
            "subscriptions_refused": self.subscriptions_refused,
            "topics": dict(sorted(subscribers.items())),
        }


_HELP = {
    "connections_open": ("gauge", "Open WebSocket connections."),
    "connections_opened": ("counter", "WebSocket connections opened."),
    "http_connections_open": ("gauge", "Open HTTP connections of mounted ASGI apps (keep-alive "
                              "ones included)."),
    "messages_in": ("counter", "Messages received."),
    "messages_out": ("counter", "Messages queued for sending."),
    "bytes_in": ("counter", "Bytes received on WebSocket connections."),
    "bytes_out": ("counter", "Bytes queued for sending on WebSocket connections."),
    "backpressure_events": ("counter", "Sends that took a connection over its backpressure limit."),
    "dropped": ("counter", "Sends dropped (connection closing or over its limit)."),
    "topic_count": ("gauge", "Topics with at least one subscriber in this process."),
    "subscriptions": ("gauge", "Subscriptions in this process, over all topics."),
    "subscriptions_refused": ("counter", "Subscribes refused by max_subscriptions."),
}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus_text(stats: dict[str, Any], prefix: str = "harpia") -> str:
    """The Prometheus text exposition format (version 0.0.4) of ``app.stats()``."""
    lines: list[str] = []
    for name, (kind, text) in _HELP.items():
        metric = f"{prefix}_{name}" + ("_total" if kind == "counter" else "")
        lines += [f"# HELP {metric} {text}", f"# TYPE {metric} {kind}", f"{metric} {stats[name]}"]
    lines += [f"# HELP {prefix}_closes_total Connections closed, by close code.",
              f"# TYPE {prefix}_closes_total counter"]
    lines += [f'{prefix}_closes_total{{code="{code}"}} {count}'
              for code, count in stats["closes_by_code"].items()]
    lines += [f"# HELP {prefix}_handshake_failures_total Refused upgrades, by HTTP status.",
              f"# TYPE {prefix}_handshake_failures_total counter"]
    lines += [f'{prefix}_handshake_failures_total{{status="{status}"}} {count}'
              for status, count in stats["handshake_failures_by_status"].items()]
    if stats["topics"]:
        # Only when asked for (``topics=N``), and at most N: clients may name topics, and
        # one series per topic would let them grow every scrape without bound.
        lines += [f"# HELP {prefix}_topic_subscribers Subscribers per topic in this process.",
                  f"# TYPE {prefix}_topic_subscribers gauge"]
        lines += [f'{prefix}_topic_subscribers{{topic="{_escape(topic)}"}} {count}'
                  for topic, count in stats["topics"].items()]
    return "\n".join(lines) + "\n"
