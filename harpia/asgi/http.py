"""HTTP/1.1 for an ASGI app: ``httptools`` (llhttp) parses, ``HttpConnection`` runs cycles.

A connection arrives here after the listener read its first request head and found no
harpia route for it (see ``AsgiMounts.take_over``): that head is handed over as bytes,
with whatever followed it, so the upgrade path never parses a head twice and this side
parses every request, the first included, with one parser.

One ``RequestCycle`` per request: the ASGI ``receive``/``send`` pair.  Requests are
answered in order; a pipelined request waits in ``pending`` (reading pauses meanwhile, so a
client cannot queue more than one read's worth).  Limits, each with its answer: a head over
the app's ``max_head_size``, ``max_request_line`` or header count (431/414), a head not
finished within ``handshake_timeout`` (408), a body over ``max_body_size`` (413), a
keep-alive connection idle for ``keep_alive_timeout`` (closed), malformed input (400).
Between requests (idle, or receiving a head) a connection counts toward the app's
``max_pending_handshakes``, as one in its first head does: a flood of idle or trickling
keep-alive connections is capped like a slowloris on the upgrade path.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import httptools

from ..http_response import response_http
from .native import native_route_app

if TYPE_CHECKING:
    from ..server import Listener
    from .mount_point import Mount, MountTable

__all__ = ["HttpConnection", "RequestCycle"]

logger = logging.getLogger("harpia")

_ASGI = {"version": "3.0", "spec_version": "2.4"}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_STATUS_LINES = {
    status: f"HTTP/1.1 {status} {phrase}\r\n".encode("latin-1")
    for status, phrase in (
        (200, "OK"), (201, "Created"), (202, "Accepted"), (204, "No Content"),
        (301, "Moved Permanently"), (302, "Found"), (304, "Not Modified"),
        (307, "Temporary Redirect"), (308, "Permanent Redirect"), (400, "Bad Request"),
        (401, "Unauthorized"), (403, "Forbidden"), (404, "Not Found"),
        (405, "Method Not Allowed"), (409, "Conflict"), (413, "Content Too Large"),
        (415, "Unsupported Media Type"), (422, "Unprocessable Content"),
        (429, "Too Many Requests"), (500, "Internal Server Error"), (502, "Bad Gateway"),
        (503, "Service Unavailable"),
    )
}
_DISCONNECT = {"type": "http.disconnect"}
_LAST_CHUNK = b"0\r\n\r\n"
_BODILESS = frozenset((204, 304))


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 999:
            raise RuntimeError(f"invalid HTTP status {status!r} in http.response.start")
        line = f"HTTP/1.1 {status} \r\n".encode("latin-1")
    return line


class RequestCycle:
    """One request and its response: what ``receive`` and ``send`` of the ASGI app act on."""

    __slots__ = (
        "conn", "app", "scope", "body", "body_size", "body_done", "waiter", "expect_continue",
        "head_only", "keep_alive", "response_started", "response_complete", "chunked",
        "status", "head", "disconnected", "started",
    )

    def __init__(self, conn: HttpConnection, app: Any, scope: dict[str, Any], keep_alive: bool,
                 expect_continue: bool) -> None:
        self.conn = conn
        self.app = app
        self.scope = scope
        self.body: list[bytes] = []
        self.body_size = 0           # bytes in ``body`` not yet handed to receive()
        self.body_done = False
        self.waiter: asyncio.Future[None] | None = None
        self.expect_continue = expect_continue
        self.head_only = scope["method"] == "HEAD"
        self.keep_alive = keep_alive
        self.response_started = False
        self.response_complete = False
        self.chunked = False
        self.status = 0
        self.head: bytes | None = None   # the response head, held to go out with the body
        self.disconnected = False
        self.started = False

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def receive(self) -> dict[str, Any]:
        if self.disconnected or self.response_complete:
            return _DISCONNECT
        conn = self.conn
        if self.expect_continue:
            # The client waits for this before sending the body: only once the app asks.
            self.expect_continue = False
            if not self.body_done and not self.body:
                conn.transport.write(_CONTINUE)
        while not self.body and not self.body_done:
            conn.watch_body()
            self.waiter = conn.loop.create_future()
            await self.waiter
            if self.disconnected:
                return _DISCONNECT
        if not self.body and self.body_done and self.started:
            # The whole body was received: what remains to hear about is a disconnect.
            self.waiter = conn.loop.create_future()
            await self.waiter
            return _DISCONNECT
        chunks = self.body
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.body = []
        self.body_size = 0
        self.started = True
        if conn.body_paused:
            conn.resume_body()
        return {"type": "http.request", "body": body, "more_body": not self.body_done}

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        conn = self.conn
        if not self.response_started:
            if kind != "http.response.start":
                raise RuntimeError(f"expected 'http.response.start', got {kind!r}")
            status = message["status"]
            self.head = self._encode_head(status, message.get("headers", ()))
            self.status = status
            self.response_started = True
            return
        if self.response_complete:
            raise RuntimeError(f"{kind!r} sent after the response was complete")
        if kind != "http.response.body":
            raise RuntimeError(f"expected 'http.response.body', got {kind!r}")
        body = message.get("body", b"")
        more = message.get("more_body", False)
        if self.disconnected:
            if not more:
                self.response_complete = True
            return
        head = self.head
        if head is not None:
            self.head = None
            if self.chunked is None:     # no Content-Length from the app: we decide
                if more:
                    if self.scope["http_version"] == "1.1":
                        self.chunked = True
                        head += b"transfer-encoding: chunked\r\n"
                    else:                # HTTP/1.0: the end of the body is the end of TCP
                        self.chunked = False
                        self.keep_alive = False
                else:
                    self.chunked = False
                    if self.status not in _BODILESS and self.status >= 200:
                        head += b"content-length: %d\r\n" % len(body)
            if self.keep_alive and conn.mounts.stopping_listener(conn.listener):
                self.keep_alive = False      # shutting down: this is the last response
            if not self.keep_alive:
                head += b"connection: close\r\n"
            head += b"\r\n"
            if self.head_only or self.status in _BODILESS:
                conn.transport.write(head)
                self.head_only = True
            elif self.chunked:
                conn.transport.write(head + (b"%x\r\n%s\r\n" % (len(body), body) if body else b"")
                                     + (b"" if more else _LAST_CHUNK))
            else:
                conn.transport.write(head + body)
        elif not self.head_only:
            if self.chunked:
                if body:
                    conn.transport.write(b"%x\r\n%s\r\n" % (len(body), body))
                if not more:
                    conn.transport.write(_LAST_CHUNK)
            elif body:
                conn.transport.write(body)
        if not more:
            self.response_complete = True
            self.wake()
            conn.cycle_complete(self)
        elif conn.writing_paused:
            await conn.wait_writable()

    def _encode_head(self, status: int, headers: Any) -> bytes:
        parts = [_status_line(status)]
        length_given = False
        keep_alive = self.keep_alive
        for name, value in headers:
            lower = name.lower()
            if lower == b"content-length":
                length_given = True
            elif lower == b"connection" and value.lower() == b"close":
                keep_alive = False
                continue
            elif lower == b"transfer-encoding":
                continue                 # framing is ours: chunked is added when needed
            parts.append(b"%s: %s\r\n" % (name, value))
        head = b"".join(parts)
        # A CR or LF inside a name or value would split the response (header injection).
        if head.count(b"\n") != len(parts) or head.count(b"\r") != len(parts):
            raise RuntimeError("an HTTP response header contains CR or LF")
        self.keep_alive = keep_alive
        self.chunked = False if length_given else None  # type: ignore[assignment]
        return head


class HttpConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection serving an ASGI app, driven by httptools."""

    def __init__(self, mounts: MountTable, listener: Listener, transport: asyncio.Transport) -> None:
        self.mounts = mounts
        self.listener = listener
        self.loop = listener.loop
        self.transport = transport
        app = listener.app
        self.head_timeout = app.handshake_timeout
        limits = mounts.head_limits
        self.max_request_line, self.max_header_line, self.max_headers, self.max_head_size = limits
        self.parser = httptools.HttpRequestParser(self)
        self.router = app.router
        self.cycle: RequestCycle | None = None       # the request being answered
        self.filling: RequestCycle | None = None     # the request being parsed
        self.pending: deque[RequestCycle] = deque()  # parsed, waiting their turn
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_size = 0
        self.in_head = False
        self.body_limit = 0
        self.body_paused = False
        self.pipeline_paused = False
        self.writing_paused = False
        self.write_waiter: asyncio.Future[None] | None = None
        self.closing = False
        self.requests = 0
        self.upgrade_pending = False   # a later request asked for WebSocket: hand it back
        self.upgrade_refused = False   # the first asked for another protocol: served as HTTP
        self.mount: Mount | None = None
        self.server = _address(transport.get_extra_info("sockname"))
        self.client = _address(transport.get_extra_info("peername"))
        self.scheme = "https" if listener.secure else "http"
        self.last_active = self.loop.time()
        self.timer: asyncio.TimerHandle | None = None
        self.head_timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ asyncio

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # pragma: no cover
        pass                                          # handed over with set_protocol()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.last_active = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            if self.upgrade_pending:
                self._hand_back(data[exc.args[0]:] if exc.args else b"")
            # Else the connection's first request asked for another protocol (h2c...): it
            # is served as HTTP/1.1, and the connection closes after its response.
            return
        except httptools.HttpParserError as exc:
            if not self.closing:
                self._fail(400, f"malformed HTTP request: {exc}\n")
            return
        except _RequestRefused:
            return
        if self.in_head and self.head_timer is None and not self.closing:
            # A head split over reads: it must be complete within the head timeout.
            self.head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def eof_received(self) -> bool | None:
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closing = True
        for timer in (self.timer, self.head_timer):
            if timer is not None:
                timer.cancel()
        self.timer = self.head_timer = None
        for cycle in (self.cycle, *self.pending):
            if cycle is not None:
                cycle.disconnected = True
                cycle.wake()
        self.pending.clear()
        self._wake_writer()
        self.mounts.connection_ended(self)

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._wake_writer()

    def _wake_writer(self) -> None:
        waiter = self.write_waiter
        if waiter is not None:
            self.write_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def wait_writable(self) -> None:
        """Backpressure for streamed responses: ``send`` waits while the client reads slowly."""
        while self.writing_paused and not self.closing:
            self.write_waiter = self.loop.create_future()
            await self.write_waiter

    # ------------------------------------------------------------------ httptools callbacks

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.head_size = 0
        self.in_head = True
        if self.cycle is None and self.requests:
            self.mounts.waiting_for_request(self, reading_head=True)

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self.max_request_line:
            self._refuse(414, "request line too long\n")

    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self.headers
        if len(headers) >= self.max_headers:
            self._refuse(431, "too many header fields\n")
        if len(name) + len(value) > self.max_header_line:
            self._refuse(431, "header line too long\n")
        self.head_size += len(name) + len(value) + 4
        if self.head_size > self.max_head_size:
            self._refuse(431, "request head too large\n")
        headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.in_head = False
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None
        parser = self.parser
        self.requests += 1
        if parser.should_upgrade():
            if self.requests > 1:
                # An upgrade after keep-alive requests (aiohttp's pooled connections do
                # this): the upgrade path takes it, once the parser has stopped.
                self.upgrade_pending = True
                return
            self.upgrade_refused = True
        url = httptools.parse_url(self.url)
        raw_path = url.path
        path = raw_path.decode("ascii", "replace")
        if "%" in path:
            path = unquote(path)
        found = self.router.match(path)   # harpia's own routes win, on every request
        if found is not None:
            app = native_route_app(found[0], found[1], self.listener.secure)
            mount = self.mount or self.mounts.mounts[-1]
        else:
            mount = self.mounts.match(path)  # type: ignore[assignment]
            if mount is None:
                self._refuse(404, "not found\n")
                return
            app = mount.app
        self.mount = mount
        expect_continue = False
        length = -1
        for name, value in self.headers:
            if name == b"content-length":
                length = int(value)
            elif name == b"expect" and value.lower() == b"100-continue":
                expect_continue = True
        limit = mount.http.max_body_size
        if length > limit:
            self._refuse(413, f"request body over {limit} bytes\n")
        self.body_limit = limit
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": _ASGI,
            "http_version": parser.get_http_version(),
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,
            "method": parser.get_method().decode("ascii"),
            "root_path": mount.root_path,
            "path": path,
            "raw_path": raw_path,
            "query_string": url.query or b"",
            "headers": self.headers,
            "state": mount.state.copy(),
        }
        cycle = RequestCycle(self, app, scope,
                             parser.should_keep_alive() and not self.upgrade_refused,
                             expect_continue)
        self.filling = cycle
        if self.cycle is None:
            self._start(cycle)
        else:
            # Pipelined behind a request still being answered: its turn comes after.
            self.pending.append(cycle)
            if not self.pipeline_paused:
                self.pipeline_paused = True
                self.transport.pause_reading()

    def on_body(self, body: bytes) -> None:
        cycle = self.filling
        if cycle is None:
            return
        cycle.body_size += len(body)
        self.body_limit -= len(body)
        if self.body_limit < 0:
            self._refuse(413, f"request body over {cycle.conn.mount.http.max_body_size} bytes\n"  # type: ignore[union-attr]
                         if not cycle.response_started else None)
        if cycle.response_complete:
            return                      # answered without reading it: discard
        cycle.body.append(body)
        if cycle.body_size > self.mount.http.body_buffer and not self.body_paused:  # type: ignore[union-attr]
            self.body_paused = True
            self.transport.pause_reading()
        cycle.wake()

    def on_message_complete(self) -> None:
        cycle = self.filling
        self.filling = None
        if cycle is not None:
            cycle.body_done = True
            cycle.wake()

    # ------------------------------------------------------------------ cycles

    def _start(self, cycle: RequestCycle) -> None:
        self.cycle = cycle
        self.mounts.request_started(self)
        self.task = self.loop.create_task(self._run(cycle, cycle.app))

    async def _run(self, cycle: RequestCycle, app: Any) -> None:
        try:
            await app(cycle.scope, cycle.receive, cycle.send)
        except BaseException as exc:
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            logger.error("error in the ASGI app for %s %s", cycle.scope["method"],
                         cycle.scope["path"], exc_info=exc)
            if not cycle.response_started and not cycle.disconnected:
                self._fail(500, "internal server error\n")
            elif not cycle.response_complete:
                self.transport.close()  # the client sees a truncated response, not a hang
            return
        if not cycle.response_complete and not cycle.disconnected:
            if cycle.response_started:
                logger.error("the ASGI app returned before finishing its response to %s %s",
                             cycle.scope["method"], cycle.scope["path"])
                self.transport.close()
            else:
                logger.error("the ASGI app returned no response to %s %s",
                             cycle.scope["method"], cycle.scope["path"])
                self._fail(500, "internal server error\n")

    def cycle_complete(self, cycle: RequestCycle) -> None:
        """The response went out: keep the connection for the next request, or close it."""
        if self.closing:
            return
        if not cycle.body_done and (cycle.expect_continue or not cycle.started):
            # The client may still be sending a body nobody will read: do not keep it.
            cycle.keep_alive = False
        if not cycle.keep_alive or self.mounts.stopping_listener(self.listener):
            self.closing = True
            self.transport.close()
            return
        self.cycle = None
        if self.body_paused:
            self.resume_body()
        if self.pending:
            self._start(self.pending.popleft())
            if not self.pending and self.pipeline_paused:
                self.pipeline_paused = False
                self.transport.resume_reading()
            return
        if self.pipeline_paused:
            self.pipeline_paused = False
            self.transport.resume_reading()
        self.mounts.waiting_for_request(self, reading_head=self.in_head)
        self.last_active = self.loop.time()
        if self.timer is None:
            self.timer = self.loop.call_later(self.mount.http.keep_alive_timeout, self._idle_check)  # type: ignore[union-attr]

    def _hand_back(self, rest: bytes) -> None:
        """Give the connection back to the listener's upgrade path, with the upgrade
        request re-encoded in front of whatever followed it."""
        if self.cycle is not None or self.pending:
            self._fail(400, "a WebSocket upgrade pipelined behind unanswered requests\n")
            return
        from ..http_protocol import HttpProtocol  # the listener's first stage, one layer down

        method = self.parser.get_method()
        head = [b"%s %s HTTP/1.1\r\n" % (method, self.url)]
        head.extend(b"%s: %s\r\n" % pair for pair in self.headers)
        head.append(b"\r\n")
        self.closing = True
        for timer in (self.timer, self.head_timer):
            if timer is not None:
                timer.cancel()
        self.timer = self.head_timer = None
        self.mounts.connection_ended(self)
        protocol = HttpProtocol(self.listener)
        self.transport.set_protocol(protocol)
        protocol.connection_made(self.transport)
        if not self.transport.is_closing():
            protocol.data_received(b"".join(head) + rest)

    def resume_body(self) -> None:
        self.body_paused = False
        if not self.pipeline_paused and not self.closing:
            self.transport.resume_reading()

    def _idle_check(self) -> None:
        # One timer per idle period, re-armed for the rest of it, instead of one made and
        # cancelled per request.
        self.timer = None
        if self.closing:
            return
        cycle = self.cycle
        if cycle is None:
            timeout = self.mount.http.keep_alive_timeout  # type: ignore[union-attr]
        elif cycle.waiter is not None and not cycle.body_done:
            # The app waits for a body that does not come (a slowloris on the body): the
            # same bound as for a head, counted from the last byte received.
            timeout = self.head_timeout
        else:
            return                      # the app is at work: not for us to time
        left = self.last_active + timeout - self.loop.time()
        if left > 0.001:
            self.timer = self.loop.call_later(left, self._idle_check)
            return
        if cycle is not None and not cycle.response_started:
            self._fail(408, "request body timed out\n")
            return
        self.closing = True
        self.transport.close()

    def watch_body(self) -> None:
        """The app waits for body bytes: time out if none come for ``handshake_timeout``."""
        if self.timer is None and not self.closing:
            self.timer = self.loop.call_later(self.head_timeout, self._idle_check)

    def shed(self) -> None:
        """Closed while idle to make room for a new connection (``max_pending_handshakes``)."""
        self.closing = True
        self.transport.close()

    def close_if_idle(self) -> bool:
        """Graceful shutdown: close now if no request is in progress."""
        if self.cycle is None and not self.in_head:
            self.closing = True
            self.transport.close()
            return True
        return False

    def _head_timed_out(self) -> None:
        self.head_timer = None
        if self.in_head and not self.closing:
            self._fail(408, "request head timed out\n")

    def _refuse(self, status: int, message: str | None) -> None:
        """Stop parsing this connection (raised out of a parser callback)."""
        if message is not None:
            self._fail(status, message)
        else:
            self.closing = True
            self.transport.close()
        raise _RequestRefused

    def _fail(self, status: int, message: str) -> None:
        self.closing = True
        self.listener.app.hub.stats.handshake_failures[status] += 1
        transport = self.transport
        if not transport.is_closing():
            transport.write(response_http(status, message))
            transport.close()
        for cycle in (self.cycle, *self.pending):
            if cycle is not None:
                cycle.disconnected = True
                cycle.wake()


class _RequestRefused(Exception):
    """Raised from a parser callback to stop parsing; the answer is already written."""


def _address(value: Any) -> tuple[str, int] | None:
    if isinstance(value, tuple) and len(value) >= 2:
        return (str(value[0]), int(value[1]))
    return None
