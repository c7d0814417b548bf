"""OpenTelemetry spans per upgrade and per connection (``pip install 'harpia[otel]'``).

    from harpia.otel import instrument
    instrument(app)                      # or instrument(app, tracer_provider=provider)

* ``WebSocket upgrade <route>``: from TCP accept to the 101, a child of the trace in the
  request's ``traceparent`` header (W3C trace context) when there is one;
* ``WebSocket <route>``: the connection's life, a child of the upgrade span, with the route,
  subprotocol, close code, messages and bytes in and out, the connection id and the client
  address as attributes.

No span per message: a span costs microseconds, a message costs less than one.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

if TYPE_CHECKING:
    from .app import App
    from .connection import ServerWebSocket

__all__ = ["instrument", "ConnectionTracer"]

#: Close codes that end a connection normally (not an error on the span).
NORMAL_CLOSES = frozenset({1000, 1001, 1012})


class ConnectionTracer:
    """What the server calls at the 101 and at the close of each connection."""

    __slots__ = ("tracer", "spans")

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        self.tracer = trace.get_tracer("harpia", tracer_provider=tracer_provider)
        self.spans: dict[int, trace.Span] = {}

    def upgraded(self, ws: ServerWebSocket[Any], elapsed: float) -> None:
        """The 101 is written, ``elapsed`` seconds after the TCP connection was accepted."""
        now = time.time_ns()
        parent = propagate.extract(dict(ws.headers.items()))
        route = ws.route.pattern
        upgrade = self.tracer.start_span(
            f"WebSocket upgrade {route}", context=parent, kind=SpanKind.SERVER,
            start_time=now - int(elapsed * 1e9),
            attributes=_attributes(ws, route))
        upgrade.end(end_time=now)
        span = self.tracer.start_span(
            f"WebSocket {route}", context=trace.set_span_in_context(upgrade, parent),
            kind=SpanKind.SERVER, start_time=now, attributes=_attributes(ws, route))
        self.spans[id(ws)] = span

    def closed(self, ws: ServerWebSocket[Any], code: int) -> None:
        span = self.spans.pop(id(ws), None)
        if span is None:
            return
        span.set_attributes({
            "websocket.close_code": code,
            "websocket.messages_in": ws.messages_in, "websocket.messages_out": ws.messages_out,
            "websocket.bytes_in": ws.bytes_in, "websocket.bytes_out": ws.bytes_out,
        })
        if code not in NORMAL_CLOSES:
            span.set_status(Status(StatusCode.ERROR, f"closed with {code}"))
        span.end()


def _attributes(ws: ServerWebSocket[Any], route: str) -> dict[str, Any]:
    attributes: dict[str, Any] = {"websocket.route": route, "websocket.connection_id": ws.id,
                                  "url.path": ws.path}
    if ws.subprotocol is not None:
        attributes["websocket.subprotocol"] = ws.subprotocol
    address = ws.remote_address
    if address is not None:
        attributes["client.address"] = address[0]
        attributes["client.port"] = address[1]
    return attributes


def instrument(app: App, tracer_provider: trace.TracerProvider | None = None) -> ConnectionTracer:
    """Trace every upgrade and connection of ``app`` from now on."""
    tracer = ConnectionTracer(tracer_provider)
    app.hub.tracer = tracer
    return tracer

