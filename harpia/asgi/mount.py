"""``app.mount(path, asgi_app)``: which ASGI app owns a path, and the hand-over to it.

The listener reads every connection's first request head with harpia's own parser and
routes it; only a request for no harpia route reaches ``AsgiMounts.take_over``.  A WebSocket
upgrade becomes an ``AsgiWebSocket`` (the ASGI app decides, harpia's engine carries the
frames); anything else becomes an ``HttpConnection``, which re-reads the head from the bytes
handed over and parses the rest of the connection with httptools.  So the native WebSocket
path pays nothing for a mount, and an ASGI connection pays one extra parse of one head.
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError
from ..handshake import is_websocket_upgrade
from ..http_head import RequestHead
from ..options import RouteOptions
from .http import HttpConnection
from .mount_point import AsgiApp, Mount
from .options import mount_options
from .websocket import AsgiWebSocket, websocket_route

if TYPE_CHECKING:
    from ..routing import WebSocketRoute
    from ..server import Listener

__all__ = ["AsgiApp", "AsgiMounts", "Mount"]

class AsgiMounts:
    """The ASGI apps of one harpia app, longest prefix first."""

    def __init__(self) -> None:
        self.mounts: list[Mount] = []
        self.connections: set[HttpConnection] = set()
        self.sockets: set[AsgiWebSocket] = set()
        # HTTP connections between requests count as pending handshakes (a request head is
        # what the server waits for on both): idle keep-alive ones, oldest first, may be
        # closed to make room for a new connection; those sending a head may not.
        self._idle: dict[HttpConnection, None] = {}
        self._reading_head: set[HttpConnection] = set()
        #: The request-head limits of the upgrade path, applied to every later request too.
        self.head_limits = (8192, 8192, 128, 65536)
        self._serving: set[Listener] = set()
        #: Listeners shutting down, each with the event set when its last connection is gone.
        self._stopping: dict[Listener, asyncio.Event] = {}

    def add(self, path: str, asgi_app: AsgiApp, options: dict[str, Any]) -> None:
        if not isinstance(path, str) or not path.startswith("/"):
            raise ConfigurationError(f"mount path must start with '/', got {path!r}")
        if not callable(asgi_app):
            raise ConfigurationError(f"the app mounted at {path!r} must be an ASGI callable")
        if self._serving:
            raise ConfigurationError("mount ASGI apps before the app is served")
        prefix = path.rstrip("/")
        if any(m.prefix == prefix for m in self.mounts):
            raise ConfigurationError(f"an ASGI app is already mounted at {path!r}")
        http, route_opts = mount_options(options)
        self.mounts.append(Mount(prefix, asgi_app, http, websocket_route(path, route_opts)))
        self.mounts.sort(key=lambda m: len(m.prefix), reverse=True)

    def websocket_routes(self) -> list[WebSocketRoute]:
        """The routes the mounts' WebSockets run on (idle timeouts and pings apply)."""
        return [mount.route for mount in self.mounts]

    def match(self, path: str) -> Mount | None:
        """The mount whose prefix is ``path`` or a whole-segment prefix of it."""
        for mount in self.mounts:
            prefix = mount.prefix
            if not prefix or path == prefix or path.startswith(prefix) and path[len(prefix)] == "/":
                return mount
        return None

    def take_over(self, listener: Listener, transport: asyncio.Transport, head: RequestHead,
                  trailing: bytes) -> None:
        """Serve this connection with the mounted app that ``match``es its path."""
        mount = self.match(head.path)
        assert mount is not None, "take_over() without a matching mount"
        if is_websocket_upgrade(head):
            AsgiWebSocket(self, mount, listener, transport, head, trailing).start()
            return
        conn = HttpConnection(self, listener, transport)
        self.connections.add(conn)
        transport.set_protocol(conn)
        conn.data_received(_encode_head(head) + trailing)
        if not conn.closing and not conn.pipeline_paused and not conn.body_paused:
            transport.resume_reading()

    # ------------------------------------------------------------------ lifecycle

    async def listener_started(self, listener: Listener) -> None:
        """Run every mount's lifespan startup when the process's first listener starts."""
        first = not self._serving
        self._serving.add(listener)
        if not first:
            return
        started: list[Mount] = []
        try:
            for mount in self.mounts:
                await mount.lifespan.startup()
                started.append(mount)
        except BaseException:
            self._serving.discard(listener)
            for mount in reversed(started):
                await mount.lifespan.shutdown()
            raise

    def stopping_listener(self, listener: Listener) -> bool:
        return listener in self._stopping

    # ------------------------------------------------------------------ between requests

    def waiting_for_request(self, conn: HttpConnection, reading_head: bool) -> None:
        """``conn`` has no request in progress: idle, or receiving the next head."""
        if reading_head:
            self._idle.pop(conn, None)
            self._reading_head.add(conn)
        else:
            self._reading_head.discard(conn)
            self._idle[conn] = None

    def request_started(self, conn: HttpConnection) -> None:
        self._idle.pop(conn, None)
        self._reading_head.discard(conn)

    def waiting_connections(self) -> int:
        """HTTP connections waiting for (or receiving) their next request head."""
        return len(self._idle) + len(self._reading_head)

    def shed_idle_connection(self) -> bool:
        """Close the longest-idle keep-alive connection, if there is one, to make room
        for a new connection under ``max_pending_handshakes``."""
        for conn in self._idle:
            del self._idle[conn]
            conn.shed()
            return True
        return False

    def connection_ended(self, conn: HttpConnection) -> None:
        self.connections.discard(conn)
        self.request_started(conn)      # no longer waiting for anything
        gone = self._stopping.get(conn.listener)
        if gone is not None and not any(c.listener is conn.listener for c in self.connections):
            gone.set()

    async def listener_stopping(self, listener: Listener, timeout: float) -> None:
        """Graceful shutdown of this listener's ASGI connections, then (when it is the
        last listener) the lifespan shutdown."""
        if listener not in self._serving:
            return
        gone = self._stopping[listener] = asyncio.Event()
        try:
            for conn in [c for c in self.connections if c.listener is listener]:
                conn.close_if_idle()
            for session in [s for s in self.sockets if s.listener is listener]:
                session.shutdown()
            # In-flight requests finish (their connections close after the response).
            if any(c.listener is listener for c in self.connections):
                try:
                    await asyncio.wait_for(gone.wait(), timeout)
                except asyncio.TimeoutError:
                    for conn in [c for c in self.connections if c.listener is listener]:
                        conn.transport.abort()
                        if conn.task is not None:
                            conn.task.cancel()   # the app outlived the close timeout
            self._serving.discard(listener)
            if not self._serving:
                for mount in self.mounts:
                    await mount.lifespan.shutdown()
        finally:
            self._stopping.pop(listener, None)


def _encode_head(head: RequestHead) -> bytes:
    lines = [f"{head.method} {head.target} {head.http_version}"]
    lines.extend(f"{name}: {value}" for name, value in head.headers.raw_items())
    lines.append("\r\n")
    return "\r\n".join(lines).encode("latin-1")
