"""Listening sockets: the HTTP upgrade stage, then the hand-over to ``ServerWebSocket``.

A ``Listener`` is one socket serving one app (an app may have several: plain and TLS).
Each accepted connection starts as an ``HttpProtocol``, which reads the request head
under size and time limits, answers plain HTTP routes, and for a WebSocket route writes
the 101 and swaps itself for the connection's ``ServerWebSocket`` on the same transport.

The listener knows the app only as a ``ServedApp``: its settings, its router, its hub and
its ASGI mounts.  ``serve_until_signal`` and ``run`` are the single-process serving path.
"""
from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from typing import Any, Protocol

from . import _frames, _loop
from ._acceptor import ACCEPT_RETRY_DELAY
from ._upgrade import parse_request_head
from .accept import Accept
from .connection import UNRESOLVED, ServerWebSocket, peer_address
from .errors import ConfigurationError, HandshakeError, ProxyProtocolError
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
from .http_response import Response, error_response, response_http
from .hub import Hub
from .log_throttle import LogThrottle
from .opening import accept_response, deflate_agreement, hand_over
from .proxy_protocol import ProxyHeaderParser
from .request import Request
from .routing import HttpRoute, Router, WebSocketRoute
from .sockets import ListeningServer, bind_unix, start_server, unlink_unix
from .tls import make_ssl_context, start_server_tls
from .topics import ConnectionSet

__all__ = ["Listener", "HttpProtocol", "ServedApp", "MountedApps", "serve_until_signal", "run"]

logger = logging.getLogger("harpia")

#: The engine's coarse clock ticks this many times a second (idle timeouts use it).
CLOCK_HZ = 16

#: Bytes a client may send behind its request while an ``async`` upgrade hook or GET
#: handler runs: reading goes on meanwhile (so a client that goes away is noticed and its
#: hook cancelled at once), until this much is held; then it pauses.
EARLY_DATA_LIMIT = 64 * 1024


class MountedApps(Protocol):
    """What a listener needs from the ASGI apps mounted on the app (``harpia.asgi``)."""

    async def listener_started(self, listener: Listener) -> None: ...
    async def listener_stopping(self, listener: Listener, timeout: float) -> None: ...
    def match(self, path: str) -> object | None: ...
    def take_over(self, listener: Listener, transport: asyncio.Transport, head: RequestHead,
                  trailing: bytes) -> None: ...
    def websocket_routes(self) -> list[WebSocketRoute]: ...
    def waiting_connections(self) -> int: ...
    def shed_idle_connection(self) -> bool: ...


class ServedApp(Protocol):
    """What a listener needs from the app it serves: settings, routes, hub, ASGI mounts."""

    @property
    def handshake_timeout(self) -> float: ...
    @property
    def close_timeout(self) -> float: ...
    @property
    def max_connections(self) -> int | None: ...
    @property
    def max_pending_handshakes(self) -> int | None: ...
    @property
    def max_pending_tls_handshakes(self) -> int | None: ...
    @property
    def busy_poll(self) -> float: ...
    @property
    def loop_transport(self) -> bool: ...
    @property
    def router(self) -> Router[WebSocketRoute | HttpRoute]: ...
    @property
    def hub(self) -> Hub: ...
    @property
    def asgi(self) -> MountedApps | None: ...


class Listener:
    """One listening socket of an app; ``async with app.serve(port=0) as server``."""

    def __init__(
        self,
        app: ServedApp,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: Mapping[str, Any] | ssl.SSLContext | None = None,
        reuse_port: bool = False,
        backlog: int = 1024,
        unix: str | None = None,
        sock: socket.socket | Sequence[socket.socket] | None = None,
        proxy_protocol: bool = False,
        forwarded_allow_ips: Iterable[str] | None = None,
    ) -> None:
        if unix is not None and sock is not None:
            raise ConfigurationError("give unix= or sock=, not both")
        if not isinstance(proxy_protocol, bool):
            raise ConfigurationError("proxy_protocol must be True or False")
        self.app = app
        self.host = host
        self.requested_port = port
        self.ssl_context = make_ssl_context(tls)
        if proxy_protocol and self.ssl_context is not None:
            # The header comes before the TLS handshake, and the TLS layer starts as soon as
            # the connection is made: end TLS at the proxy, or in front of harpia.
            raise ConfigurationError("proxy_protocol=True cannot be combined with tls= yet")
        self.secure = self.ssl_context is not None
        self.reuse_port = reuse_port
        self.backlog = backlog
        #: A Unix socket path to bind, or listening sockets made elsewhere (one per address).
        self.unix = unix
        self.sockets = [sock] if isinstance(sock, socket.socket) else list(sock or ())
        self.sock = self.sockets[0] if self.sockets else None
        self._unix_inode: int | None = None
        #: Every connection starts with a PROXY protocol header (v1 or v2) naming the client.
        self.proxy_protocol = proxy_protocol
        #: Peers whose X-Forwarded-For / Forwarded headers are believed; None: nobody's.
        self.trusted_proxies = (None if forwarded_allow_ips is None
                                else TrustedProxies(forwarded_allow_ips))
        self.connections: ConnectionSet[ServerWebSocket[Any]] = ConnectionSet()
        self.close_timeout = app.close_timeout
        self.handshake_timeout = app.handshake_timeout
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self.cork: _loop.LoopContext | None = None
        self._server: ListeningServer | None = None
        self._port: int | None = None
        self.accepting = False
        # Every connection this listener upgraded that has not ended yet, open or closing
        # (``connections`` holds the open ones): their memory is still held.
        self._held: set[ServerWebSocket[Any]] = set()
        #: Connections of this listener still in their TLS handshake (also in _handshaking).
        self.tls_handshaking = 0
        # Connections still in their HTTP stage, each with its deadline (handshake_timeout
        # after it was accepted).  Deadlines grow in insertion order, so one timer for the
        # oldest serves them all: no timer is made and cancelled per connection.
        self._handshaking: dict[HttpProtocol, float] = {}
        self._handshake_timer: asyncio.TimerHandle | None = None
        self._all_gone: asyncio.Event | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._sweep_every = 1.0
        self._protocol_errors = LogThrottle()
        self._refused_connections = LogThrottle()
        self._refused_upgrades = LogThrottle()

    # ------------------------------------------------------------------ lifecycle

    async def _prepare(self) -> None:
        """The first step of starting: the loop, the cork, the clock, ASGI lifespans."""
        self.loop = asyncio.get_running_loop()
        self.cork = _loop.LoopContext(self.loop.call_soon, self.app.busy_poll)
        # Connections are stamped with the coarse clock: set it now, or those made
        # before the first sweep look idle since whenever it was last set (or ever).
        _frames.set_clock(_clock_now())
        self.accepting = True
        if self.app.asgi is not None:
            await self.app.asgi.listener_started(self)    # ASGI lifespan startup

    async def start_in_process(self) -> Listener:
        """Serve connections handed over with ``loop.connect_accepted_socket`` (the test
        client), without a listening socket."""
        await self._prepare()
        return await self._serve()

    async def _serve(self) -> Listener:
        """Idle timeouts, then the hub (and its backplane): the last step of starting."""
        self._start_sweeper()
        try:
            await self.app.hub.attach(self)
        except BaseException:
            await self.stop()
            raise
        return self

    def _start_sweeper(self) -> None:
        routes = [r for r in self.app.router.routes() if isinstance(r, WebSocketRoute)]
        if self.app.asgi is not None:    # ASGI WebSockets run on a route of their mount
            routes += self.app.asgi.websocket_routes()
        timeouts = [r.options.idle_timeout for r in routes if r.options.idle_timeout]
        if timeouts:
            self._sweep_every = max(0.05, min(1.0, min(timeouts) / 8))
            self._sweeper = self.loop.call_later(self._sweep_every, self._sweep)

    async def start(self) -> Listener:
        """Bind and start accepting; ``app.serve`` calls it on ``async with``."""
        await self._prepare()
        sockets = self.sockets
        if self.unix is not None:
            sockets = [bind_unix(self.unix, self.backlog)]
            self._unix_inode = os.stat(self.unix).st_ino
        # TLS is started by HttpProtocol (loop.start_tls), not here: then a connection
        # still in its TLS handshake counts against the pending-handshake caps and the
        # handshake deadline like one still sending its request head.  start_tls needs the
        # loop's own transport: TLS listeners accept through the loop.
        self._server = await start_server(
            self.loop, lambda: HttpProtocol(self), sockets=sockets, host=self.host,
            port=self.requested_port, reuse_port=self.reuse_port, backlog=self.backlog,
            own_io=self.ssl_context is None and not self.app.loop_transport,
            on_accept_error=self._accept_failed)
        bound = self._server.sockets[0].getsockname()
        self._port = int(bound[1]) if isinstance(bound, tuple) else 0
        return await self._serve()

    def _accept_failed(self, err: int) -> None:
        self._refused_connections.warn("cannot accept connections (%s); trying again in %.2f s",
                                       os.strerror(err), ACCEPT_RETRY_DELAY)

    @property
    def server(self) -> ListeningServer | None:
        """The asyncio server accepting for this listener (None until it starts, and for
        connections handed over in process)."""
        return self._server

    @property
    def port(self) -> int:
        """The port actually bound (useful with ``port=0``)."""
        # Kept from start: while stopping, the server has no sockets any more, yet close
        # handlers running then may still ask.
        assert self._port is not None, "the listener is not started"
        return self._port

    @property
    def url(self) -> str:
        """Where clients connect: ``ws://host:port`` (``wss://`` with TLS)."""
        scheme = "wss" if self.secure else "ws"
        if self.unix is not None:
            return f"{scheme}+unix://{self.unix}"
        host = self.host
        if self.sock is not None and self.sock.fileno() >= 0:
            bound = self.sock.getsockname()      # the socket's own address, not host=
            if not isinstance(bound, tuple):
                return f"{scheme}+unix://{bound}"
            host = bound[0]
        host = host if ":" not in host else f"[{host}]"
        return f"{scheme}://{host}:{self.port}"

    async def stop(self, *, code: int = 1001, timeout: float | None = None) -> None:
        """Stop accepting, close every connection with ``code``, wait (bounded), abort the rest."""
        if not self.accepting:
            return
        self.accepting = False
        wait = self.close_timeout if timeout is None else timeout
        if self._server is not None:
            self._server.close()
        if self._unix_inode is not None and self.unix is not None:
            unlink_unix(self.unix, self._unix_inode)
            self._unix_inode = None
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        for protocol in list(self._handshaking):
            protocol.abort()
        for ws in list(self._held):
            ws.start_closing_for_shutdown(code)
        if self._held:
            self._all_gone = asyncio.Event()
            try:
                await asyncio.wait_for(self._all_gone.wait(), wait)
            except asyncio.TimeoutError:
                for ws in list(self._held):
                    ws.terminate()
                await asyncio.sleep(0)
        if self.app.asgi is not None:
            await self.app.asgi.listener_stopping(self, wait)
        self._server = None
        await self.app.hub.detach(self)

    async def __aenter__(self) -> Listener:
        if not self.accepting:
            await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def __await__(self):  # type: ignore[no-untyped-def]
        return self.__aenter__().__await__()

    # ------------------------------------------------------------------ bookkeeping

    def connection_opened(self, ws: ServerWebSocket[Any]) -> None:
        self._held.add(ws)
        self.connections.add(ws)
        per_address = self.app.hub.per_address
        if per_address is not None and ws.remote_address is not None:
            per_address.add(ws.remote_address[0])

    def handshake_started(self, protocol: HttpProtocol) -> None:
        deadline = self.loop.time() + self.handshake_timeout
        self._handshaking[protocol] = deadline
        if self._handshake_timer is None:
            self._handshake_timer = self.loop.call_at(deadline, self._expire_handshakes)

    def _expire_handshakes(self) -> None:
        """Answer 408 to every connection past its deadline; wait for the next one."""
        self._handshake_timer = None
        now = self.loop.time()
        for protocol, deadline in list(self._handshaking.items()):
            if deadline > now:
                self._handshake_timer = self.loop.call_at(deadline, self._expire_handshakes)
                return
            protocol.timed_out()            # removes it from _handshaking

    def connection_ended(self, ws: ServerWebSocket[Any]) -> None:
        self._held.discard(ws)
        per_address = self.app.hub.per_address
        if per_address is not None and ws.remote_address is not None:
            per_address.remove(ws.remote_address[0])
        if not self._held and self._all_gone is not None:
            self._all_gone.set()

    def connection_closing(self, ws: ServerWebSocket[Any]) -> None:
        self.connections.discard(ws)

    def handshakes_in_progress(self) -> int:
        """TCP connections of this listener still in their HTTP stage."""
        return len(self._handshaking)

    def connections_held(self) -> int:
        """WebSocket connections of this listener, open or closing."""
        return len(self._held)

    def protocol_error(self, ws: ServerWebSocket[Any], code: int, reason: str) -> None:
        self._protocol_errors.warn("closing %s %s from %s with %d: %s",
                                   ws.id, ws.path, ws.remote_address, code, reason)

    # The caps are the app's, over all its listeners; this one is counted even while it
    # starts (before the hub lists it).
    def pending_handshakes(self) -> int:
        """TCP connections of the app still in their HTTP stage (head, upgrade hook), and
        its ASGI HTTP connections between requests."""
        asgi = self.app.asgi
        servers = self.app.hub.servers
        if asgi is None and (not servers or (len(servers) == 1 and self in servers)):
            return len(self._handshaking)     # the usual case: checked per accepted socket
        return len(self._handshaking) + sum(
            other.handshakes_in_progress() for other in self.app.hub.servers if other is not self
        ) + (asgi.waiting_connections() if asgi is not None else 0)

    def pending_tls_handshakes(self) -> int:
        """TCP connections of the app still in their TLS handshake."""
        return self.tls_handshaking + sum(
            other.tls_handshaking for other in self.app.hub.servers if other is not self)

    def open_connections(self) -> int:
        """WebSocket connections of the app, open or closing (their memory is still held)."""
        return len(self._held) + sum(
            other.connections_held() for other in self.app.hub.servers if other is not self)

    def _sweep(self) -> None:
        """Idle timeouts for every connection, with one timer per listener (not per socket)."""
        now = _clock_now()
        _frames.set_clock(now)
        for ws in self.connections.snapshot():
            options = ws.route.options
            timeout = options.idle_timeout
            if not timeout:
                continue
            idle = ((now - ws.last_seen) & 0xFFFFFFFF) / CLOCK_HZ
            if idle >= timeout:
                ws.close(1001, "idle timeout")
            elif options.send_pings and idle >= timeout / 2:
                ws.keepalive_ping()
        self._sweeper = self.loop.call_later(self._sweep_every, self._sweep)


def _clock_now() -> int:
    # One clock for every loop and thread of the process: time.monotonic, in 1/16 s.
    return int(time.monotonic() * CLOCK_HZ) & 0xFFFFFFFF


class HttpProtocol(asyncio.Protocol):
    """A connection before its upgrade: reads one request head, answers or upgrades."""

    __slots__ = ("listener", "transport", "parser", "trailing", "websocket_key", "head_received",
                 "held_data", "held_size", "task", "tls_pending", "proxy", "client")

    def __init__(self, listener: Listener) -> None:
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
            listener._refused_connections.warn(
                "closing new connections: %d handshakes in progress (max_pending_handshakes)", cap)
            self.transport.abort()
            return
        # A connection an ASGI mount hands back for its upgrade is already decrypted.
        start_tls = (listener.ssl_context is not None
                     and transport.get_extra_info("ssl_object") is None)
        if start_tls:
            tls_cap = listener.app.max_pending_tls_handshakes
            if tls_cap is not None and listener.pending_tls_handshakes() >= tls_cap:
                listener._refused_connections.warn(
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

    def _done(self) -> None:
        self.listener._handshaking.pop(self, None)
        self._tls_over()                # now, not when the cancelled start_tls unwinds
        task = self.task
        if task is not None:
            self.task = None
            task.cancel()               # no-op when it has finished

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
            self.listener._refused_connections.warn("dropping a connection: %s", exc.message)
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
        status = int(response[9:12])
        if status >= 400:
            self.listener.app.hub.stats.handshake_failures[status] += 1
        self._done()
        transport = self.transport
        if not transport.is_closing():
            transport.write(response)
            transport.close()

    # ------------------------------------------------------------------ routing

    def _dispatch(self, head: RequestHead) -> None:
        app = self.listener.app
        found = app.router.match(head.path)
        if found is None and app.asgi is not None and app.asgi.match(head.path) is not None:
            self._done()                  # from here the ASGI side keeps its own deadlines
            app.asgi.take_over(self.listener, self.transport, head, self.trailing)
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
            listener._refused_upgrades.warn(
                "answering upgrades with 503: %d WebSocket connections (max_connections)", cap)
            raise HandshakeError(503, "server at capacity, try again later", {"Retry-After": "5"})
        per_address = listener.app.hub.per_address
        if per_address is not None:
            peer = self.client = self._peer()
            if peer is not None and per_address.full(peer[0]):
                listener._refused_upgrades.warn(
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
        accepted_at = listener._handshaking.get(self)    # its deadline: accepted + timeout
        self._done()
        hub = listener.app.hub
        latency, tracer = hub.latency, hub.tracer
        if accepted_at is not None and (latency is not None or tracer is not None):
            elapsed = listener.loop.time() - accepted_at + listener.handshake_timeout
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


async def serve_until_signal(listener: Listener,
                             on_listening: Callable[[], object] | None = None) -> None:
    """Start ``listener``, serve until SIGINT/SIGTERM (when on the main thread), then stop
    it gracefully (1001 to every client).  ``on_listening`` runs once it listens."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    await listener.start()
    if logger.hasHandlers():
        logger.info("harpia listening on %s", listener.url)
    else:  # nobody configured logging: still say where we are, once
        print(f"harpia listening on {listener.url}", flush=True)
    if on_listening is not None:
        on_listening()
    try:
        await stop.wait()
    finally:
        logger.info("shutting down: closing %d connection(s)", listener.connections_held())
        await listener.stop()


def run(main: Coroutine[Any, Any, Any]) -> None:
    """Run a coroutine on uvloop when it is installed (it is a dependency), else asyncio."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)
