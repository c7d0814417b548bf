"""OpenTelemetry: one span per upgrade and one per connection, linked to the incoming
``traceparent``, with the connection's figures; none per message."""
from __future__ import annotations

from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from wsclient import CLOSE, RawClient

from harpia import harpia
from harpia.otel import instrument

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


async def test_spans_per_upgrade_and_connection() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = harpia()
    app.ws("/room/:id", {"message": lambda ws, m: ws.send(m)}, subprotocols=["chat"])
    instrument(app, tracer_provider=provider)
    ids: list[str] = []
    async with app.serve() as server:
        client = await RawClient.connect(server.port)
        response = await client.handshake("/room/7", headers=[
            ("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01"), ("Sec-WebSocket-Protocol", "chat")])
        assert response.status == 101
        for text in ("one", "two", "three"):
            await client.send_text(text)
            assert (await client.recv_frame()).payload == text.encode()
        ids.append(next(iter(app.websocket.connections)).id)
        await client.send_close(4000, "bye")
        assert (await client.recv_frame()).opcode == CLOSE
        client.sock.close()

        plain = await RawClient.open(server.port, "/room/8")   # no traceparent: a new trace
        await plain.send_close(1000)
        await plain.recv_frame()
        plain.sock.close()
    spans = {(s.name, s.attributes["websocket.connection_id"]): s for s in exporter.get_finished_spans()}
    assert len(spans) == 4                     # two per connection, none per message
    upgrade = spans[("WebSocket upgrade /room/:id", ids[0])]
    connection = spans[("WebSocket /room/:id", ids[0])]
    assert format(upgrade.context.trace_id, "032x") == TRACE_ID
    assert upgrade.parent is not None and format(upgrade.parent.span_id, "016x") == PARENT_ID
    assert connection.parent is not None and connection.parent.span_id == upgrade.context.span_id
    assert upgrade.kind == connection.kind == SpanKind.SERVER
    assert upgrade.start_time is not None and upgrade.end_time is not None
    assert upgrade.start_time <= upgrade.end_time <= connection.start_time  # type: ignore[operator]
    attributes: Any = connection.attributes
    assert attributes["websocket.route"] == "/room/:id"
    assert attributes["websocket.subprotocol"] == "chat"
    assert attributes["websocket.close_code"] == 4000
    assert attributes["websocket.messages_in"] == 3 and attributes["websocket.messages_out"] == 3
    assert attributes["websocket.bytes_in"] > 0 and attributes["websocket.bytes_out"] > 0
    assert attributes["client.address"] == "127.0.0.1"
    assert connection.status.status_code == StatusCode.ERROR
    others = [s for (name, cid), s in spans.items() if cid != ids[0]]
    assert {s.context.trace_id for s in others} != {upgrade.context.trace_id}
    assert all(s.status.status_code != StatusCode.ERROR for s in others)
