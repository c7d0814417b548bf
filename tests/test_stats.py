"""app.stats() and the Prometheus text: counters that follow real traffic."""
from __future__ import annotations

import asyncio
import urllib.request

import pytest

from harpia import HandshakeError, ServerWebSocket, harpia
from harpia.testing import TestClient


def make_app():  # type: ignore[no-untyped-def]
    app = harpia()

    def on_message(ws: ServerWebSocket[object], message: str | bytes) -> None:
        if message == "flood":
            for _ in range(64):
                ws.send(b"x" * 1024)
        else:
            ws.send(message)

    app.ws("/echo", {"open": lambda ws: ws.subscribe("news"), "message": on_message},
           backpressure_limit=8 * 1024)
    app.expose_metrics()
    return app


async def test_counters_follow_traffic_and_closes() -> None:
    app = make_app()
    async with TestClient(app) as client:
        ws = await client.connect("/echo")
        for text in ("a", "bb", "ccc"):
            await ws.send(text)
            assert await ws.receive() == text
        stats = app.stats()
        assert stats["connections_open"] == 1 and stats["connections_opened"] == 1
        assert stats["messages_in"] == 3 and stats["messages_out"] == 3
        assert stats["bytes_in"] >= 6 + 3 * 6          # payloads plus masked headers
        assert stats["bytes_out"] == 6 + 3 * 2
        assert stats["topics"] == {"news": 1}
        slow = await client.connect("/echo", slow=True)
        await slow.send("flood")
        await asyncio.sleep(0.05)
        stats = app.stats()
        assert stats["backpressure_events"] == 1
        assert stats["dropped"] > 0
        await ws.close(4000)
        with pytest.raises(HandshakeError) as refused:
            await client.connect("/missing")
        assert refused.value.status == 404
    stats = app.stats()
    assert stats["connections_open"] == 0
    assert stats["closes_by_code"][4000] == 1
    assert stats["closes_by_code"].get(1001, 0) == 1       # the slow one, at shutdown
    assert stats["handshake_failures_by_status"] == {404: 1}
    assert stats["messages_in"] == 4                       # kept after the connections closed


async def test_prometheus_endpoint_over_http() -> None:
    app = make_app()
    async with app.serve(port=0) as server:
        loop = asyncio.get_running_loop()
        body = await loop.run_in_executor(None, lambda: urllib.request.urlopen(
            f"http://127.0.0.1:{server.port}/metrics", timeout=5).read().decode())
    assert "# TYPE harpia_connections_open gauge" in body
    assert "harpia_connections_opened_total 0" in body
    assert "harpia_messages_in_total 0" in body
