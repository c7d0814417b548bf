"""Latency histograms: buckets and export on their own; upgrade, sampled handler and
publish latencies observed over real sockets; off with ``latency_histograms=False``."""
from __future__ import annotations

import re
import time
from typing import Any

import pytest
from wsclient import TEXT, RawClient

from harpia import ConfigurationError, harpia
from harpia.histograms import (
    HANDLER_SAMPLE,
    Histogram,
    Latencies,
    add_snapshots,
    prometheus_histogram,
)


def test_buckets_and_export() -> None:
    histogram = Histogram((0.1, 1.0))
    for seconds in (0.05, 0.1, 0.5, 3.0):
        histogram.observe(seconds)
    histogram.observe_ns(2_000_000)                       # 2 ms
    assert histogram.counts == [3, 1, 1] and histogram.count == 5
    lines = prometheus_histogram("x_seconds", "X.", histogram.snapshot())
    assert 'x_seconds_bucket{le="0.1"} 3' in lines
    assert 'x_seconds_bucket{le="1"} 4' in lines
    assert 'x_seconds_bucket{le="+Inf"} 5' in lines
    assert "x_seconds_count 5" in lines
    assert float(lines[-2].split()[1]) == pytest.approx(3.652)
    summed = add_snapshots([histogram.snapshot(), histogram.snapshot()])
    assert summed is not None and summed["counts"] == [6, 2, 2] and summed["count"] == 10


def series(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert match, f"{name} missing"
    return float(match.group(1))


async def test_latencies_over_real_sockets() -> None:
    app = harpia()

    def on_message(ws: Any, message: str) -> None:
        time.sleep(0.001)                  # every handler takes at least 1 ms
        app.publish("room", message)

    app.ws("/", {"open": lambda ws: ws.subscribe("room"), "message": on_message})
    async with app.serve() as server:
        clients = [await RawClient.open(server.port) for _ in range(3)]
        sent = HANDLER_SAMPLE * 4
        for i in range(sent):
            await clients[0].send_text(str(i))
        for client in clients:
            for _ in range(sent):
                assert (await client.recv_frame()).opcode == TEXT
        text = app.metrics_text()
        for client in clients:
            client.sock.close()
    assert series(text, "harpia_upgrade_seconds_count") == 3
    assert series(text, 'harpia_upgrade_seconds_bucket{le="+Inf"}') == 3
    # Sampled: one handler call in HANDLER_SAMPLE, counted across the process.
    samples = series(text, "harpia_message_handler_seconds_count")
    assert 3 <= samples <= 5
    assert series(text, "harpia_message_handler_seconds_sum") >= samples * 0.001
    assert series(text, 'harpia_message_handler_seconds_bucket{le="0.001"}') == 0
    assert series(text, "harpia_publish_seconds_count") == sent
    assert series(text, 'harpia_publish_seconds_bucket{le="10"}') == sent


async def test_connections_share_one_handler_timer() -> None:
    """Each open connection holds the handler timer: one bound method for all of them,
    not one per connection (idle memory)."""
    app = harpia()
    opened: list[Any] = []
    app.ws("/", {"open": opened.append, "message": lambda ws, m: ws.send(m)})
    async with app.serve() as server:
        clients = [await RawClient.open(server.port) for _ in range(2)]
        for client in clients:
            await client.send_text("x")
            assert (await client.recv_frame()).payload == b"x"   # open has run
        for client in clients:
            client.sock.close()
    assert len(opened) == 2
    assert opened[0].handler_timer is not None and opened[0].handler_timer is opened[1].handler_timer


async def test_off() -> None:
    app = harpia(latency_histograms=False)
    app.ws("/", {"message": lambda ws, m: ws.send(m)})
    async with app.serve() as server:
        client = await RawClient.open(server.port)
        await client.send_text("hi")
        assert (await client.recv_frame()).payload == b"hi"
        client.sock.close()
    assert "seconds" not in app.metrics_text()
    with pytest.raises(ConfigurationError, match="latency_histograms"):
        harpia(latency_histograms=1)  # type: ignore[arg-type]


def test_a_publish_outside_the_loop_is_not_timed() -> None:
    latencies = Latencies()
    latencies.published()                   # from a thread, say: no loop to time it on
    assert latencies.publish.count == 0 and latencies._published == []
