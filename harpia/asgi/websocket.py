"""ASGI WebSocket endpoints (FastAPI ``@app.websocket``) carried by harpia's frame engine.

Before the app accepts, ``AsgiWebSocket`` owns the transport (reading paused) and answers
the ASGI handshake messages: ``websocket.accept`` writes the 101 and hands the transport
to a ``ServerWebSocket`` (the same engine, pub/sub and backpressure as a native route);
``websocket.close`` or the denial-response extension (``websocket.http.response.*``) answer
with an HTTP status instead.  After the accept, messages go from the engine straight into
this object's queue (no task per message), and ``receive()`` takes them out.

Flow control both ways: when the app falls behind, more than ``QUEUE_HIGH`` messages
pause delivery (the engine then holds at most ``max_inbound_backlog`` bytes and stops
reading); a ``send`` that takes the connection over its ``backpressure_limit`` waits for
the client to drain it.

``connection(scope)`` gives the app the ``ServerWebSocket`` after the accept, so an ASGI
endpoint can ``subscribe`` to harpia topics and ``publish`` to them.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from .._frames import CLOSED, OPEN
from ..connection import UNRESOLVED, ServerWebSocket, peer_address
from ..errors import ClientDisconnected, ConnectionClosed, HandshakeError, HarpiaError
from ..handlers import bind_handlers
from ..handshake import check_websocket_request, parse_header_tokens
from ..http_head import RequestHead
from ..http_response import error_response, refuse, response_http
from ..opening import accept_response, deflate_agreement, hand_over
from ..options import RouteOptions
from ..routing import WebSocketRoute

if TYPE_CHECKING:
    from ..server import Listener
    from .mount_point import Mount, MountTable

__all__ = ["AsgiWebSocket", "AsgiServerWebSocket", "connection", "websocket_route"]

logger = logging.getLogger("harpia")

_ASGI = {"version": "3.0", "spec_version": "2.4"}
#: Messages queued for an app that has not called ``receive()`` before delivery pauses.
#: 16 keeps a pipelining client busy without holding more than a few messages per socket.
QUEUE_HIGH = 16
_CONNECTING, _ACCEPTED, _CLOSED = 0, 1, 2


class AsgiServerWebSocket(ServerWebSocket[Any]):
    """A ``ServerWebSocket`` that also knows the ASGI session it feeds."""

    __slots__ = ("session",)
    session: AsgiWebSocket


def _on_close(ws: AsgiServerWebSocket, code: int, reason: str) -> None:
    ws.session.disconnected(code, reason)


def _on_drain(ws: AsgiServerWebSocket) -> None:
    ws.session.drained()


def websocket_route(path: str, options: RouteOptions) -> WebSocketRoute:
    """The route every ASGI WebSocket of a mount runs on (its handlers feed the session)."""
    return WebSocketRoute(path, bind_handlers({"close": _on_close, "drain": _on_drain}), options)


def connection(scope: Mapping[str, Any]) -> ServerWebSocket[Any]:
    """The harpia connection behind an accepted ASGI WebSocket (``websocket.scope`` in
    FastAPI/Starlette): ``subscribe``, ``publish``, ``send`` and the rest of
    ``ServerWebSocket``.  Raises ``HarpiaError`` for a scope harpia does not serve and
    ``ConnectionClosed`` before the accept or after the close."""
    extension = scope.get("extensions", {}).get("harpia.connection")
    if extension is None:
        raise HarpiaError("this ASGI scope is not a WebSocket served by harpia")
    ws: ServerWebSocket[Any] | None = extension["connection"]
    if ws is None or ws.ready_state == CLOSED:
        raise ConnectionClosed(1006, "the ASGI WebSocket is not accepted yet, or closed")
    return ws


class AsgiWebSocket(asyncio.Protocol):
    """One ASGI ``websocket`` scope: the handshake, then the bridge to the engine."""

    def __init__(self, mounts: MountTable, mount: Mount, listener: Listener,
                 transport: asyncio.Transport, head: RequestHead, early: bytes) -> None:
        self.mounts = mounts
        self.mount = mount
        self.listener = listener
        self.loop = listener.loop
        self.transport = transport
        self.head = head
        self.early = early
        self.state = _CONNECTING
        self.ws: AsgiServerWebSocket | None = None
        self.queue: deque[Any] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.drain_waiter: asyncio.Future[None] | None = None
        self.delivery_paused = False
        self.connect_sent = False
        self.close_code = 1006
        self.close_reason = ""
        self.ended = False            # the client is gone (or we closed it)
        self.denial: list[bytes] | None = None
        self.denial_head: tuple[int, Any] | None = None
        self.extension: dict[str, Any] = {"connection": None, "app": listener.app}
        self.timer: asyncio.TimerHandle | None = None
        self.key = ""
        self.task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ before the accept

    def start(self) -> None:
        head = self.head
        try:
            self.key = check_websocket_request(head)
        except HandshakeError as exc:
            self._answer(error_response(exc))
            return
        self.mounts.sockets.add(self)
        self.transport.set_protocol(self)
        # The app has the handshake timeout to accept or refuse, as an upgrade hook has.
        self.timer = self.loop.call_later(self.listener.app.handshake_timeout, self._timed_out)
        raw_path = head.path.encode("latin-1")
        path = unquote(head.path) if "%" in head.path else head.path
        subprotocols = parse_header_tokens(head.headers.get_all("sec-websocket-protocol"))
        scope = {
            "type": "websocket",
            "asgi": _ASGI,
            "http_version": head.http_version[5:],
            "scheme": "wss" if self.listener.secure else "ws",
            "server": _sockname(self.transport),
            "client": peer_address(self.transport),
            "root_path": self.mount.root_path,
            "path": path,
            "raw_path": raw_path,
            "query_string": head.raw_query.encode("latin-1"),
            "headers": [(name.lower().encode("latin-1"), value.encode("latin-1"))
                        for name, value in head.headers.raw_items()],
            "subprotocols": subprotocols,
            "state": self.mount.state.copy(),
            "extensions": {"websocket.http.response": {}, "harpia.connection": self.extension},
        }
        self.task = self.loop.create_task(self._run(scope))

    async def _run(self, scope: dict[str, Any]) -> None:
        try:
            await self.mount.app(scope, self.receive, self.send)
        except BaseException as exc:
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            if isinstance(exc, asyncio.CancelledError) or self.ended:
                return
            logger.error("error in the ASGI WebSocket app for %s", scope["path"], exc_info=exc)
            if self.state == _CONNECTING:
                self._answer(response_http(500, "internal server error\n"))
            elif self.ws is not None and self.ws.ready_state == OPEN:
                self.ws.close(1011, "internal error")
            return
        if self.state == _CONNECTING:
            # Returned without accepting: the handshake is refused (ASGI says 403).
            self._answer(response_http(403, "forbidden\n"))
        elif self.ws is not None and self.ws.ready_state == OPEN:
            self.ws.close(1000)

    def data_received(self, data: bytes) -> None:
        # Reading is paused until the accept; a read already under way may still land.
        self.early += data
        if len(self.early) > 65536:
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.state == _CONNECTING:
            self.disconnected(1006, "")

    def _timed_out(self) -> None:
        self.timer = None
        if self.state == _CONNECTING:
            logger.warning("the ASGI app at %s did not accept or refuse a WebSocket in %.0f s",
                           self.head.path, self.listener.app.handshake_timeout)
            self._answer(response_http(503, "the application did not answer the handshake\n"))

    def _answer(self, response: bytes) -> None:
        """Refuse the handshake with an HTTP response and close."""
        self._end_connecting()
        refuse(self.transport, response, self.listener.app.hub.stats.handshake_failures)
        self.disconnected(1006, "")

    def _end_connecting(self) -> None:
        self.state = _CLOSED
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.mounts.sockets.discard(self)

    def shutdown(self) -> None:
        """Graceful shutdown before the accept: refuse with 503."""
        if self.state == _CONNECTING:
            self._answer(response_http(503, "server shutting down\n"))

    def _accept(self, message: Mapping[str, Any]) -> None:
        listener = self.listener
        app = listener.app
        transport = self.transport
        head = self.head
        route = self.mount.route
        if transport.is_closing():
            raise ClientDisconnected(1006, "the client left before the accept")
        cap = app.max_connections
        if cap is not None and listener.open_connections() >= cap:
            self._answer(error_response(HandshakeError(
                503, "server at capacity, try again later", {"Retry-After": "5"})))
            raise ClientDisconnected(1006, "refused: server at capacity")
        subprotocol = message.get("subprotocol")
        extra = [(name.decode("latin-1"), value.decode("latin-1"))
                 for name, value in message.get("headers") or ()]
        agreement = deflate_agreement(route, head)
        ws = AsgiServerWebSocket(app.hub, route, listener, transport, head, {}, UNRESOLVED,
                                 subprotocol, listener.secure)
        ws.session = self
        ws.bind_message_handler(self.message_received, 2, False)
        response = accept_response(ws, agreement, self.key, subprotocol, extra)
        self._end_connecting()
        self.state = _ACCEPTED
        self.ws = ws
        self.extension["connection"] = ws
        early, self.early = self.early, b""
        hand_over(ws, transport, listener, response, early)

    def _deny(self, message: Mapping[str, Any]) -> None:
        kind = message["type"]
        if kind == "websocket.http.response.start":
            if self.denial_head is not None:
                raise RuntimeError("websocket.http.response.start sent twice")
            self.denial_head = (message["status"], message.get("headers") or ())
            self.denial = []
            return
        if self.denial_head is None or self.denial is None:
            raise RuntimeError("websocket.http.response.body before websocket.http.response.start")
        self.denial.append(bytes(message.get("body", b"")))
        if message.get("more_body", False):
            return
        status, headers = self.denial_head
        pairs = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in headers]
        content_type = next((v for n, v in pairs if n.lower() == "content-type"),
                            "text/plain; charset=utf-8")
        self._answer(response_http(status, b"".join(self.denial), headers=pairs,
                                   content_type=content_type))

    # ------------------------------------------------------------------ engine side

    def message_received(self, ws: ServerWebSocket[Any], message: str | bytes) -> None:
        queue = self.queue
        queue.append(message)
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            waiter.set_result(None)
        if len(queue) >= QUEUE_HIGH and not self.delivery_paused:
            self.delivery_paused = True
            ws.pause_delivery()

    def disconnected(self, code: int, reason: str) -> None:
        if self.ended:
            return
        self.ended = True
        self.close_code = code
        self.close_reason = reason
        self.extension["connection"] = None
        if self.state == _CONNECTING:
            self._end_connecting()
        for waiter in (self.waiter, self.drain_waiter):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        self.waiter = self.drain_waiter = None

    def drained(self) -> None:
        waiter = self.drain_waiter
        if waiter is not None:
            self.drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # ------------------------------------------------------------------ ASGI

    async def receive(self) -> dict[str, Any]:
        if not self.connect_sent:
            self.connect_sent = True
            return {"type": "websocket.connect"}
        queue = self.queue
        while not queue:
            if self.ended:
                return {"type": "websocket.disconnect", "code": self.close_code,
                        "reason": self.close_reason}
            self.waiter = self.loop.create_future()
            await self.waiter
        message = queue.popleft()
        if self.delivery_paused and not queue:
            self.delivery_paused = False
            self.ws.resume_delivery()  # type: ignore[union-attr]
        if type(message) is str:
            return {"type": "websocket.receive", "text": message}
        return {"type": "websocket.receive", "bytes": message}

    async def send(self, message: Mapping[str, Any]) -> None:
        kind = message["type"]
        ws = self.ws
        if ws is not None and kind == "websocket.send":
            data = message.get("bytes")
            if data is None:
                data = message.get("text")
                if data is None:
                    raise RuntimeError("websocket.send needs 'bytes' or 'text'")
            while True:
                sent = ws.send(data)
                if sent > 0:
                    return
                if ws.ready_state != OPEN:
                    raise ClientDisconnected(self.close_code, "the WebSocket is closed")
                if sent < 0:
                    # Queued, and over the limit: wait until the client drains it.
                    await self._wait_drain(ws)
                    return
                await self._wait_drain(ws)         # dropped while over the limit: retry
        if kind == "websocket.close":
            if ws is not None:
                if ws.ready_state != OPEN:
                    raise ClientDisconnected(self.close_code, "the WebSocket is closed")
                ws.close(message.get("code", 1000), message.get("reason") or "")
                return
            if self.state == _CONNECTING:
                self._answer(response_http(403, "forbidden\n"))
                return
        elif self.state == _CONNECTING:
            if kind == "websocket.accept":
                self._accept(message)
                return
            if kind in ("websocket.http.response.start", "websocket.http.response.body"):
                self._deny(message)
                return
        if self.ended or (ws is not None and ws.ready_state != OPEN):
            raise ClientDisconnected(self.close_code, "the WebSocket is closed")
        raise RuntimeError(f"unexpected ASGI message {kind!r} in this WebSocket state")

    async def _wait_drain(self, ws: ServerWebSocket[Any]) -> None:
        if self.ended:
            raise ClientDisconnected(self.close_code, "the WebSocket is closed")
        self.drain_waiter = self.loop.create_future()
        await self.drain_waiter


def _sockname(transport: asyncio.BaseTransport) -> tuple[str, int] | None:
    try:
        name = transport.get_extra_info("sockname")
    except (OSError, RuntimeError):
        return None
    if isinstance(name, tuple) and len(name) >= 2:
        return (str(name[0]), int(name[1]))
    return None
