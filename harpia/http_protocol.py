"""A connection before its upgrade: ``HttpProtocol`` reads one request head (after a
PROXY header and a TLS handshake, when the listener has them), then upgrades it to a
WebSocket, answers it over plain HTTP, or hands it to a mounted ASGI app.

It sees the listener that accepted it as an ``UpgradeHost`` (the caps, the handshake
deadlines, the settings of the socket) and the app as an ``UpgradingApp``: the listener's
module imports this one, never the other way.
"""
from __future__ import annotations

import asyncio
import inspect
import json
import logging
import ssl
from typing import Any, Protocol

from ._upgrade import parse_request_head
from .accept import Accept
from .connection import UNRESOLVED, ConnectionHost, ServerWebSocket, peer_address
from .errors import HandshakeError, ProxyProtocolError
from .forwarded import TrustedProxies
from .handshake import (
    check_origin,
    check_websocket_request,
    is_websocket_upgrade,
    select_subprotocol,
    usual_websocket_key,
)
from .http_head import RequestHead
from .http_parser import DEFAULT_LIMITS, HttpRequestParser
from .http_response import Response, error_response, refuse, response_http
from .hub import Hub
from .log_throttle import LogThrottle
from .opening import OpeningHost, accept_response, deflate_agreement, hand_over
from .proxy_protocol import ProxyHeaderParser
from .request import Request
from .routing import HttpRoute, Router, WebSocketRoute
from .tls import start_server_tls

__all__ = ["HttpProtocol", "UpgradeHost", "UpgradingApp", "EARLY_DATA_LIMIT"]

logger = logging.getLogger("harpia")

#: Bytes a client may send behind its request while an ``async`` upgrade hook or GET
#: handler runs: reading goes on meanwhile (so a client that goes away is noticed and its
#: hook cancelled at once), until this much is held; then it pauses.
EARLY_DATA_LIMIT = 64 * 1024


class UpgradingMounts(Protocol):
    """What the upgrade stage asks of the ASGI apps mounted on the app."""

    def match(self, path: str) -> object | None: ...
    def shed_idle_connection(self) -> bool: ...


class UpgradingApp(Protocol):
    """What the upgrade stage needs from the app: caps, routes, hub, ASGI mounts."""

    @property
    def max_connections(self) -> int | None: ...
    @property
    def max_pending_handshakes(self) -> int | None: ...
    @property
    def max_pending_tls_handshakes(self) -> int | None: ...
    @property
    def router(self) -> Router[WebSocketRoute | HttpRoute]: ...
    @property
    def hub(self) -> Hub: ...
    @property
    def asgi(self) -> UpgradingMounts | None: ...


class UpgradeHost(ConnectionHost, OpeningHost, Protocol):
    """What the upgrade stage needs from the listener that accepted the connection."""

    #: Connections of this listener still in their TLS handshake.
    tls_handshaking: int
    #: Connections of this listener in their HTTP stage, each with its deadline.
    handshake_deadlines: dict[HttpProtocol, float]

    @property
    def app(self) -> UpgradingApp: ...
    @property
    def accepting(self) -> bool: ...
    @property
    def secure(self) -> bool: ...
    @property
    def ssl_context(self) -> ssl.SSLContext | None: ...
    @property
    def proxy_protocol(self) -> bool: ...
    @property
    def trusted_proxies(self) -> TrustedProxies | None: ...
    @property
    def handshake_timeout(self) -> float: ...
    @property
    def refused_connections(self) -> LogThrottle: ...
    @property
    def refused_upgrades(self) -> LogThrottle: ...

    def handshake_started(self, protocol: HttpProtocol) -> None: ...
    def pending_handshakes(self) -> int: ...
    def pending_tls_handshakes(self) -> int: ...
    def open_connections(self) -> int: ...
    def give_to_asgi(self, transport: asyncio.Transport, head: RequestHead, trailing: bytes) -> None:
        """A mounted ASGI app serves the connection from here on."""


class HttpProtocol(asyncio.Protocol):
    """A connection before its upgrade: reads one request head, answers or upgrades."""

    __slots__ = ("listener", "transport", "parser", "trailing", "websocket_key", "head_received",
                 "held_data", "held_size", "task", "tls_pending", "proxy", "client")

    def __init__(self, listener: UpgradeHost) -> None:
        self.listener = listener
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        # The general parser, made only for a head that does not come whole (data_received);
        # what followed the head in its last read; the key of a valid handshake, if it is one.
        self.parser: HttpRequestParser | None = None
        self.trailing = b""
        self.websocket_key: str | None = None
        #: The head is complete: what arrives now is not parsed but kept for the connection.
        self.head_received = False
        #: Bytes received while not parsing (see data_received), handed on later.
        self.held_data: list[bytes] | None = None
        self.held_size = 0
        # The async upgrade hook or GET handler in progress: cancelled when the client
        # goes away or the handshake times out, so neither it nor the slot outlives them.
        self.task: asyncio.Future[Any] | None = None
        #: In the TLS handshake (counted in the listener's ``tls_handshaking``).
        self.tls_pending = False
        #: Reads the PROXY header first, on a ``proxy_protocol`` listener.
        self.proxy: ProxyHeaderParser | None = None
        #: The client's address once a PROXY header or a trusted proxy's headers said it.
        self.client: tuple[str, int] | None | object = UNRESOLVED

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        listener = self.listener
        if not listener.accepting:
            self.transport.abort()
            return
        cap = listener.app.max_pending_handshakes
        if cap is not None and listener.pending_handshakes() >= cap and (
                listener.app.asgi is None or not listener.app.asgi.shed_idle_connection()):
            # A flood of connections that do not finish their request (slowloris): hang up
            # at once, before reading or allocating anything for this one (unless an idle
            # keep-alive connection of a mounted ASGI app could be closed instead).
            listener.refused_connections.warn(
                "closing new connections: %d handshakes in progress (max_pending_handshakes)", cap)
            self.transport.abort()
            return
        # A connection an ASGI mount hands back for its upgrade is already decrypted.
        start_tls = (listener.ssl_context is not None
                     and transport.get_extra_info("ssl_object") is None)
        if start_tls:
            tls_cap = listener.app.max_pending_tls_handshakes
            if tls_cap is not None and listener.pending_tls_handshakes() >= tls_cap:
                listener.refused_connections.warn(
                    "closing new connections: %d TLS handshakes in progress "
                    "(max_pending_tls_handshakes)", tls_cap)
                self.transport.abort()
                return
        listener.handshake_started(self)
        if listener.proxy_protocol:
            self.proxy = ProxyHeaderParser()
        if start_tls:
            assert listener.ssl_context is not None
            self.tls_pending = True
            listener.tls_handshaking += 1
            self.task = asyncio.ensure_future(self._start_tls(listener.ssl_context))

    async def _start_tls(self, context: ssl.SSLContext) -> None:
        raw = self.transport
        # What was read before start_tls took the transport over (uvloop) is the start of
        # the handshake.  The listener's deadline bounds it, with the request head after.
        hello, self.held_data, self.held_size = self.held_data, None, 0
        try:
            tls = await start_server_tls(self.listener.loop, raw, self, context,
                                         self.listener.handshake_timeout, b"".join(hello or ()))
        except Exception:
            # A failed or abandoned TLS handshake (reset, timeout, not TLS at all, a
            # protocol error): dropped without a log line, as a bad request head would be.
            self._done()
            raw.abort()
            return
        except asyncio.CancelledError:
            self._tls_over()            # the deadline or a shutdown aborted it
            raise
        self.task = None
        self.transport = tls
        self._tls_over()
        # Bytes decrypted right after the handshake, before this coroutine resumed.
        early, self.held_data, self.held_size = self.held_data, None, 0
        if early:
            self.data_received(b"".join(early))

    def connection_lost(self, exc: BaseException | None) -> None:
        self._done()

    def _done(self) -> float | None:
        """Out of the HTTP stage: returns the deadline it had, if it was still counted."""
        deadline = self.listener.handshake_deadlines.pop(self, None)
        self._tls_over()                # now, not when the cancelled start_tls unwinds
        task = self.task
        if task is not None:
            self.task = None
            task.cancel()               # no-op when it has finished
        return deadline

    def _tls_over(self) -> None:
        if self.tls_pending:
            self.tls_pending = False
            self.listener.tls_handshaking -= 1

    def abort(self) -> None:
        self._done()
        self.transport.abort()

    def timed_out(self) -> None:
        if self.tls_pending:
            self.abort()                # no 408 in clear text on a TLS connection
            return
        # A slowloris (a byte a second) never finishes its head: answer 408 and hang up.
        self._respond(response_http(408, "handshake timed out\n"))

    def data_received(self, data: bytes) -> None:
        if self.proxy is not None:
            data = self._proxy_header(data)
            if not data:
                return
        if self.head_received or self.tls_pending:
            # Frames sent right behind the request, while an async upgrade hook runs; or
            # bytes read in the loop turn before or after start_tls (see _start_tls):
            # one read at most, and the raw transport is start_tls's to pause then.
            if self.held_data is None:
                self.held_data = []
            self.held_data.append(data)
            self.held_size += len(data)
            if self.held_size >= EARLY_DATA_LIMIT and not self.tls_pending:
                self.transport.pause_reading()
            return
        parser = self.parser
        try:
            # The first bytes, from any client the whole head: read in C, no parser object.
            found = parse_request_head(data, *DEFAULT_LIMITS) if parser is None else None
            if found is None:
                parser = self.parser = parser or HttpRequestParser()
                head = parser.feed(data)
                self.trailing, self.websocket_key = parser.trailing, parser.websocket_key
            else:
                head, end, self.websocket_key = found
                self.trailing = data[end:]
        except HandshakeError as exc:
            self._respond(error_response(exc))
            return
        if head is None:
            return
        self.head_received = True
        self.transport.pause_reading()
        try:
            self._dispatch(head)
        except HandshakeError as exc:
            self._respond(error_response(exc))
        except Exception:
            logger.exception("error while answering %s %s", head.method, head.path)
            self._respond(response_http(500, "internal server error\n"))

    def _proxy_header(self, data: bytes) -> bytes:
        """Read the PROXY header; returns the bytes after it (b"" while it is incomplete)."""
        assert self.proxy is not None
        try:
            header = self.proxy.feed(data)
        except ProxyProtocolError as exc:
            self.listener.refused_connections.warn("dropping a connection: %s", exc.message)
            self.listener.app.hub.stats.handshake_failures[400] += 1
            self.abort()
            return b""
        if header is None:
            return b""
        trailing = self.proxy.trailing
        self.proxy = None
        if header.source is not None:
            self.client = header.source
        return trailing

    def eof_received(self) -> bool:
        return False

    def _respond(self, response: bytes) -> None:
        self._done()
        refuse(self.transport, response, self.listener.app.hub.stats.handshake_failures)

    # ------------------------------------------------------------------ routing

    def _dispatch(self, head: RequestHead) -> None:
        app = self.listener.app
        found = app.router.match(head.path)
        if found is None and app.asgi is not None and app.asgi.match(head.path) is not None:
            self._done()                  # from here the ASGI side keeps its own deadlines
            self.listener.give_to_asgi(self.transport, head, self.trailing)
            return
        if found is None:
            self._respond(response_http(404, "not found\n", head_only=head.method == "HEAD"))
            return
        route, params = found
        trusted = self.listener.trusted_proxies
        if trusted is not None:
            self.client = trusted.client_address(self._peer(), head.headers)
        if route.kind == "http":
            self._http(route, head, params)  # type: ignore[arg-type]
            return
        ws_route: WebSocketRoute = route  # type: ignore[assignment]
        # Found while parsing when the head is a valid handshake (what clients send);
        # a valid request asks for the upgrade, too.
        key = self.websocket_key or usual_websocket_key(head)
        if key is None:
            if not is_websocket_upgrade(head):
                self._respond(response_http(
                    426, "this path speaks WebSocket: send an Upgrade request\n",
                    headers=(("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")),
                ))
                return
            key = check_websocket_request(head)
        options = ws_route.options
        # The checks a route without origins, subprotocols or caps does not need are not
        # called: this runs for every connection.
        if options.origins is not None:
            check_origin(head, options.origins)
        subprotocol = (select_subprotocol(head, options.subprotocols)
                       if options.subprotocols else None)
        if app.max_connections is not None or app.hub.per_address is not None:
            self._check_capacity()        # before the hook: a full server does no work for it
        hook = options.upgrade
        if hook is None:
            self._accept(ws_route, head, params, key, subprotocol, None)
            return
        request = Request(head, params=params, remote_address=self._peer(), secure=self.listener.secure)
        result = hook(request)
        if inspect.isawaitable(result):
            task = self.task = asyncio.ensure_future(result)
            task.add_done_callback(
                lambda t: self._after_hook(t, ws_route, head, params, key, subprotocol))
            self.transport.resume_reading()
            return
        self._accept(ws_route, head, params, key, subprotocol, result)

    def _after_hook(self, task: asyncio.Future[Any], route: WebSocketRoute, head: RequestHead,
                    params: dict[str, str], key: str, subprotocol: str | None) -> None:
        if task.cancelled() or self.transport.is_closing():
            return
        self.task = None
        try:
            data = task.result()
            self._check_capacity()        # again: others may have been accepted meanwhile
            self._accept(route, head, params, key, subprotocol, data)
        except HandshakeError as exc:
            self._respond(error_response(exc))
        except Exception:
            logger.exception("error in the upgrade hook of %s", route.pattern)
            self._respond(response_http(500, "internal server error\n"))

    def _check_capacity(self) -> None:
        listener = self.listener
        cap = listener.app.max_connections
        if cap is not None and listener.open_connections() >= cap:
            listener.refused_upgrades.warn(
                "answering upgrades with 503: %d WebSocket connections (max_connections)", cap)
            raise HandshakeError(503, "server at capacity, try again later", {"Retry-After": "5"})
        per_address = listener.app.hub.per_address
        if per_address is not None:
            peer = self.client = self._peer()
            if peer is not None and per_address.full(peer[0]):
                listener.refused_upgrades.warn(
                    "answering upgrades from %s with 429: %d connections (max_connections_per_ip)",
                    peer[0], per_address.limit)
                raise HandshakeError(429, "too many connections from your address",
                                     {"Retry-After": "5"})

    def _peer(self) -> tuple[str, int] | None:
        client = self.client
        if client is UNRESOLVED:
            return peer_address(self.transport)
        return client  # type: ignore[return-value]

    def _accept(self, route: WebSocketRoute, head: RequestHead, params: dict[str, str],
                key: str, subprotocol: str | None, data: Any) -> None:
        listener = self.listener
        transport = self.transport
        if transport.is_closing():
            return
        agreement = deflate_agreement(route, head) if route.options.deflate is not None else None
        extra_headers: tuple[tuple[str, str], ...] = ()
        if isinstance(data, Accept):
            data, extra_headers = data.data, data.headers
        if data is None and route.options.data is not None:
            data = route.options.data()
        ws: ServerWebSocket[Any] = ServerWebSocket(
            listener.app.hub, route, listener, transport, head, params, self.client,
            subprotocol, listener.secure, data)
        response = accept_response(ws, agreement, key, subprotocol, extra_headers)
        deadline = self._done()           # accepted + handshake_timeout
        hub = listener.app.hub
        latency, tracer = hub.latency, hub.tracer
        if deadline is not None and (latency is not None or tracer is not None):
            elapsed = listener.loop.time() - deadline + listener.handshake_timeout
            if latency is not None:
                latency.upgrade.observe(elapsed)
            if tracer is not None:
                tracer.upgraded(ws, elapsed)
        # The handshake's lookups are done; the index would be kept for the connection's life.
        head.headers.compact()
        early = self.trailing
        if self.held_data:
            early += b"".join(self.held_data)
            self.held_data = None
        hand_over(ws, transport, listener, response, early)

    def _http(self, route: HttpRoute, head: RequestHead, params: dict[str, str]) -> None:
        if head.method not in ("GET", "HEAD"):
            self._respond(response_http(405, "method not allowed\n", headers={"Allow": "GET, HEAD"}))
            return
        request = Request(head, params=params, remote_address=self._peer(), secure=self.listener.secure)
        result = route.handler(request) if route.arity else route.handler()
        if inspect.isawaitable(result):
            task = self.task = asyncio.ensure_future(result)
            task.add_done_callback(lambda t: self._http_done(t, route, head))
            self.transport.resume_reading()
            return
        self._http_answer(route, head, result)

    def _http_done(self, task: asyncio.Future[Any], route: HttpRoute, head: RequestHead) -> None:
        if task.cancelled() or self.transport.is_closing():
            return
        self.task = None
        # The answer is built here too, not only awaited: a wrong return value or a bad
        # header must be a 500 now, as on the sync path, not a 408 at the timeout.
        try:
            self._http_answer(route, head, task.result())
        except Exception:
            logger.exception("error in the handler of GET %s", route.pattern)
            self._respond(response_http(500, "internal server error\n"))

    def _http_answer(self, route: HttpRoute, head: RequestHead, result: Any) -> None:
        head_only = head.method == "HEAD"
        if isinstance(result, Response):
            content_type = result.content_type or route.content_type or _content_type(result.body)
            self._respond(response_http(result.status, result.body, headers=result.headers,
                                        content_type=content_type, head_only=head_only))
            return
        if isinstance(result, (dict, list)):
            body: str | bytes = json.dumps(result)
            content_type = route.content_type or "application/json"
        elif isinstance(result, (str, bytes)):
            body = result
            content_type = route.content_type or _content_type(result)
        elif result is None:
            # Most often a forgotten ``return``: a 200 with nothing would hide it.
            raise TypeError(f"GET {route.pattern} returned None; return str, bytes, dict, "
                            f"list or harpia.Response (Response(b'', status=204) for no body)")
        else:
            raise TypeError(
                f"GET {route.pattern} returned {type(result).__name__}; return str, bytes, "
                f"dict, list or harpia.Response")
        self._respond(response_http(200, body, content_type=content_type, head_only=head_only))


def _content_type(body: str | bytes) -> str:
    return "text/plain; charset=utf-8" if isinstance(body, str) else "application/octet-stream"
