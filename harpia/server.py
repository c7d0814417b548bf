"""Listening sockets: the HTTP upgrade stage, then the hand-over to ``ServerWebSocket``.

A ``Listener`` is one socket serving one app (an app may have several: plain and TLS).
Each accepted connection starts as an ``HttpProtocol`` (http_protocol.py), which reads the
request head under size and time limits, answers plain HTTP routes, and for a WebSocket
route writes the 101 and swaps itself for the connection's ``ServerWebSocket`` on the same
transport.

The listener knows the app only as a ``ServedApp``: its settings, its router, its hub and
its ASGI mounts.  ``serve_until_signal`` and ``run`` are the single-process serving path.
"""
from __future__ import annotations

import asyncio
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
from .connection import ServerWebSocket
from .errors import ConfigurationError
from .forwarded import TrustedProxies
from .http_head import RequestHead
from .http_protocol import HttpProtocol, UpgradingApp, UpgradingMounts
from .log_throttle import LogThrottle
from .routing import WebSocketRoute
from .sockets import ListeningServer, bind_unix, start_server, unlink_unix
from .tls import make_ssl_context
from .topics import ConnectionSet

__all__ = ["Listener", "HttpProtocol", "ServedApp", "MountedApps", "serve_until_signal", "run"]

logger = logging.getLogger("harpia")

#: The engine's coarse clock ticks this many times a second (idle timeouts use it).
CLOCK_HZ = 16

class MountedApps(UpgradingMounts, Protocol):
    """What a listener needs from the ASGI apps mounted on the app (``harpia.asgi``):
    what the upgrade stage asks, and the listener's own calls."""

    async def listener_started(self, listener: Listener) -> None: ...
    async def listener_stopping(self, listener: Listener, timeout: float) -> None: ...
    def take_over(self, listener: Listener, transport: asyncio.Transport, head: RequestHead,
                  trailing: bytes) -> None: ...
    def websocket_routes(self) -> list[WebSocketRoute]: ...
    def waiting_connections(self) -> int: ...


class ServedApp(UpgradingApp, Protocol):
    """What a listener needs from the app it serves: what the upgrade stage needs (caps,
    routes, hub), its timeouts and I/O settings, and the ASGI mounts."""

    @property
    def handshake_timeout(self) -> float: ...
    @property
    def close_timeout(self) -> float: ...
    @property
    def busy_poll(self) -> float: ...
    @property
    def loop_transport(self) -> bool: ...
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
        #: Connections of this listener still in their TLS handshake (also in handshake_deadlines).
        self.tls_handshaking = 0
        # Connections still in their HTTP stage, each with its deadline (handshake_timeout
        # after it was accepted).  Deadlines grow in insertion order, so one timer for the
        # oldest serves them all: no timer is made and cancelled per connection.
        self.handshake_deadlines: dict[HttpProtocol, float] = {}
        self._handshake_timer: asyncio.TimerHandle | None = None
        self._all_gone: asyncio.Event | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._sweep_every = 1.0
        self._protocol_errors = LogThrottle()
        self.refused_connections = LogThrottle()
        self.refused_upgrades = LogThrottle()

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
        self.refused_connections.warn("cannot accept connections (%s); trying again in %.2f s",
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
        """Where clients connect: ``ws://host:port`` (``wss://`` with TLS; ``localhost`` for
        ``host=""``, which is every address)."""
        scheme = "wss" if self.secure else "ws"
        if self.unix is not None:
            return f"{scheme}+unix://{self.unix}"
        host = self.host
        if len(self.sockets) == 1 and self.sock is not None and self.sock.fileno() >= 0:
            bound = self.sock.getsockname()      # the socket's own address, not host=
            if not isinstance(bound, tuple):
                return f"{scheme}+unix://{bound}"
            host = bound[0]
        if not host:
            host = "localhost"      # every address of both families; Bun names it so too
        elif ":" in host:
            host = f"[{host}]"
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
        for protocol in list(self.handshake_deadlines):
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

    def give_to_asgi(self, transport: asyncio.Transport, head: RequestHead, trailing: bytes) -> None:
        """A mounted ASGI app takes the connection whose request head is ``head``."""
        assert self.app.asgi is not None
        self.app.asgi.take_over(self, transport, head, trailing)

    def handshake_started(self, protocol: HttpProtocol) -> None:
        deadline = self.loop.time() + self.handshake_timeout
        self.handshake_deadlines[protocol] = deadline
        if self._handshake_timer is None:
            self._handshake_timer = self.loop.call_at(deadline, self._expire_handshakes)

    def _expire_handshakes(self) -> None:
        """Answer 408 to every connection past its deadline; wait for the next one."""
        self._handshake_timer = None
        now = self.loop.time()
        for protocol, deadline in list(self.handshake_deadlines.items()):
            if deadline > now:
                self._handshake_timer = self.loop.call_at(deadline, self._expire_handshakes)
                return
            protocol.timed_out()            # removes it from handshake_deadlines

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
        return len(self.handshake_deadlines)

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
            return len(self.handshake_deadlines)     # the usual case: checked per accepted socket
        return len(self.handshake_deadlines) + sum(
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
