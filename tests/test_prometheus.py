"""``HarpiaCollector``: harpia's figures through a ``prometheus_client`` registry."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from wsclient import RawClient

from harpia import harpia
from harpia.prometheus import HarpiaCollector


async def test_collector_matches_metrics_text() -> None:
    app = harpia()
    app.ws("/", {"open": lambda ws: ws.subscribe("news"), "message": lambda ws, m: ws.send(m)})
    registry = CollectorRegistry()
    registry.register(HarpiaCollector(app))
    async with app.serve() as server:
        clients = [await RawClient.open(server.port) for _ in range(2)]
        await clients[0].send_text("hi")
        assert (await clients[0].recv_frame()).payload == b"hi"
        text = generate_latest(registry).decode()
        for client in clients:
            client.sock.close()
    lines = set(text.splitlines())
    assert "harpia_connections_open 2.0" in lines
    assert "harpia_connections_opened_total 2.0" in lines
    assert "harpia_messages_in_total 1.0" in lines
    assert 'harpia_topic_subscribers{topic="news"} 2.0' in lines
    assert 'harpia_upgrade_seconds_bucket{le="+Inf"} 2.0' in lines
    assert "harpia_upgrade_seconds_count 2.0" in lines
    assert "# TYPE harpia_publish_seconds histogram" in lines
