"""``harpia.connect``: a WebSocket client on the same frame engine as the server.

    async with harpia.connect("wss://example.com/feed") as ws:
        ws.send("subscribe")
        async for message in ws:
            ...

``ClientWebSocket`` *is* a ``FrameEngine`` in the client role (it masks what it sends),
bound to an asyncio transport once the opening handshake (``client_handshake``) has
succeeded.  Messages reach the user in one of two ways:

- handlers, in the shape of a server route (``{"open", "message", "close", "error",
  "drain", "ping", "pong"}``): the engine calls ``message`` directly from the read, with
  no Python frame in between (the fast path);
- without a ``message`` handler, ``await ws.recv()`` and ``async for``: messages wait in a
  queue of at most ``max_queue``; once it is full the engine holds further input (at most
  ``inbound_limit`` bytes) and then stops reading from the socket until the application
  catches up, so a fast sender cannot grow the client's memory.
"""
from __future__ import annotations

import asyncio
import collections
import functools
import logging
import ssl
import weakref
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from typing import Any, TypedDict

from ._connector import connect_transport
from ._frames import OPEN
from ._loop import LoopContext
from .engine_protocol import EngineProtocol
from .client_handshake import ClientHandshake, HandshakeResult, parse_url
from .errors import ConfigurationError, ConnectionClosed, HandshakeError
from .handlers import RouteHandlers, bind_handlers
from ._transport import SocketPoller
from .http_head import Headers

__all__ = ["connect", "Connect", "ClientWebSocket", "ClientHandlers", "client_ssl_context"]

logger = logging.getLogger("harpia")

#: Default limits, as the server's routes: a message of up to 16 MiB, 1 MiB of unsent
#: output before ``send`` returns -1, 16 queued messages before reading pauses.
MAX_PAYLOAD_LENGTH = 16 * 1024 * 1024
BACKPRESSURE_LIMIT = 1024 * 1024
MAX_QUEUE = 16
#: Input held (unparsed) once the queue is full, before the socket stops being read.
INBOUND_LIMIT = 64 * 1024
OPEN_TIMEOUT = 10.0
CLOSE_TIMEOUT = 10.0
MAX_REDIRECTS = 5

#: Close codes after which ``async for`` ends quietly instead of raising.
_NORMAL_CLOSURE = frozenset((1000, 1001))

# One cork (output batched per loop turn, the shared receive area) per event loop and
# busy_poll setting.
_corks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[float, LoopContext]] = \
    weakref.WeakKeyDictionary()


def _cork_for(loop: asyncio.AbstractEventLoop, busy_poll: float) -> LoopContext:
    corks = _corks.get(loop)
    if corks is None:
        corks = _corks[loop] = {}
    cork = corks.get(busy_poll)
    if cork is None:
        cork = corks[busy_poll] = LoopContext(loop.call_soon, busy_poll)
    return cork


def client_ssl_context(tls: Mapping[str, Any] | ssl.SSLContext | None) -> ssl.SSLContext:
    """The context of a ``wss://`` connection: certificates verified against the system's
    CAs (or ``tls["ca"]``); ``tls["cert"]``/``tls["key"]`` present a client certificate."""
    if isinstance(tls, ssl.SSLContext):
        return tls
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if tls is None:
        return context
    if not isinstance(tls, Mapping):
        raise ConfigurationError("tls must be a mapping (ca, cert, key, passphrase) or an "
                                 "ssl.SSLContext")
    unknown = set(tls) - {"ca", "cert", "key", "passphrase"}
    if unknown:
        raise ConfigurationError(f"unknown tls option(s): {', '.join(sorted(unknown))}")
    if tls.get("ca"):
        context.load_verify_locations(str(tls["ca"]))
    if tls.get("cert"):
        context.load_cert_chain(str(tls["cert"]), tls.get("key") and str(tls["key"]),
                                tls.get("passphrase"))
    elif tls.get("key"):
        raise ConfigurationError("tls 'key' needs 'cert' (a client certificate)")
    return context


_Message = str | bytes

_default_context: ssl.SSLContext | None = None


def _default_ssl_context() -> ssl.SSLContext:
    """The system's CAs, loaded once per process (that takes milliseconds)."""
    global _default_context
    if _default_context is None:
        _default_context = client_ssl_context(None)
    return _default_context


class ClientHandlers(TypedDict, total=False):
    """The handlers of a client connection, as a mapping; every key is optional."""

    open: Callable[[ClientWebSocket], object]
    message: Callable[[ClientWebSocket, _Message], object]
    close: Callable[[ClientWebSocket, int, str], object]
    error: Callable[[ClientWebSocket, BaseException], object]
    drain: Callable[[ClientWebSocket], object]
    ping: Callable[[ClientWebSocket, bytes], object]
    pong: Callable[[ClientWebSocket, bytes], object]


def _queue_message(ws: ClientWebSocket, message: _Message) -> None:
    """The message handler of a connection without one: queue for ``recv()``."""
    queue = ws._queue
    queue.append(message)
    waiter = ws._waiter
    if waiter is not None:
        ws._waiter = None
        if not waiter.done():
            waiter.set_result(None)
    if len(queue) >= ws.max_queue:
        ws.pause_delivery()


class ClientWebSocket(EngineProtocol):
    """One client connection (``ws``): the engine in the client role on a transport."""

    __slots__ = (
        "url", "loop", "_response", "_response_headers", "subprotocol", "extensions",
        "max_queue", "close_timeout", "_handlers", "_queue", "_waiter", "_closed",
        "_close_timer", "_initiated_close", "_failed", "_close_code", "_close_reason", "_drain_waiter",
    )

    def __init__(
        self,
        url: str,
        handlers: RouteHandlers,
        loop: asyncio.AbstractEventLoop,
        *,
        max_payload_length: int,
        backpressure_limit: int,
        max_queue: int,
        close_timeout: float,
    ) -> None:
        super().__init__(client=True, max_payload_length=max_payload_length,
                         backpressure_limit=backpressure_limit, inbound_limit=INBOUND_LIMIT)
        self.url = url
        self.transport = None
        self.loop = loop
        self._response: HandshakeResult | None = None
        self._response_headers: Headers | None = None
        self.subprotocol: str | None = None
        self.extensions: str | None = None
        self.max_queue = max_queue
        self.close_timeout = close_timeout
        self._handlers = handlers
        self._queue: collections.deque[_Message] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        # One future per wait_closed() caller, made when someone waits (most connections end
        # unobserved); each caller's own, so cancelling one wait leaves the others waiting.
        self._closed: list[asyncio.Future[tuple[int, str]]] | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._initiated_close = False
        self._failed = False
        self._close_code = 0
        self._close_reason = ""
        self._drain_waiter: asyncio.Future[None] | None = None
        message = handlers.message
        if message is not None:
            self.bind_message_handler(message.fn, message.arity, message.is_async)
        else:
            self.bind_message_handler(_queue_message, 2, False)

    # ------------------------------------------------------------------ user API

    @property
    def response_headers(self) -> Headers:
        """The header fields of the server's 101 response (case-insensitive)."""
        headers = self._response_headers
        if headers is None:
            response = self._response
            headers = Headers() if response is None else response.headers
            self._response_headers = headers
        return headers

    @property
    def close_code(self) -> int | None:
        """The close code once the connection is closed (see ``wait_closed``), else None."""
        return self._close_code or None

    @property
    def close_reason(self) -> str:
        """The reason of the close frame that ended the connection ("" until then)."""
        return self._close_reason

    async def recv(self) -> str | bytes:
        """The next message (``str`` for text, ``bytes`` for binary).

        Raises ``ConnectionClosed`` (with the close code and reason) once the connection
        is closed and every message that arrived before has been taken.
        """
        queue = self._queue
        while not queue:
            if self._handlers.message is not None:
                raise ConfigurationError("recv() has no messages to give: this connection "
                                         "delivers them to its 'message' handler")
            if self._close_code:
                raise ConnectionClosed(self._close_code, self._close_reason)
            waiter = self._waiter
            if waiter is None:
                waiter = self._waiter = self.loop.create_future()
            await waiter
        message = queue.popleft()
        if len(queue) <= self.max_queue // 4:
            self.resume_delivery()        # a no-op unless the queue had filled up
        return message

    def __aiter__(self) -> ClientWebSocket:
        return self

    async def __anext__(self) -> str | bytes:
        try:
            return await self.recv()
        except ConnectionClosed as exc:
            if exc.code in _NORMAL_CLOSURE:
                raise StopAsyncIteration from None
            raise

    async def drain(self) -> None:
        """Wait until output is back under a quarter of ``backpressure_limit`` after a
        ``send`` returned -1 (returns at once otherwise, and once closed)."""
        if self.buffered_amount <= self.backpressure_limit or self._close_code:
            return
        if self._drain_waiter is None:
            self._drain_waiter = self.loop.create_future()
        await asyncio.shield(self._drain_waiter)

    async def wait_closed(self) -> tuple[int, str]:
        """Wait until the connection is closed; its close code and reason.

        The code is the server's when it closed first; ours when we did and the server
        answered (or when we failed the connection for a protocol error: 1002, 1007,
        1009...); 1006 when the connection ended without the closing handshake
        (``close_timeout`` bounds the wait for the server's reply).
        """
        if self._close_code:
            return self._close_code, self._close_reason
        closed: asyncio.Future[tuple[int, str]] = self.loop.create_future()
        waiters = self._closed
        if waiters is None:
            self._closed = [closed]
        else:
            waiters[:] = [w for w in waiters if not w.done()]    # waits since cancelled
            waiters.append(closed)
        return await closed

    def __repr__(self) -> str:
        state = ("CONNECTING", "OPEN", "CLOSING", "CLOSED")[self.ready_state]
        return f"<ClientWebSocket {self.url} {state}>"

    # ------------------------------------------------------------------ engine hooks

    def ping_received(self, payload: bytes) -> None:
        handler = self._handlers.ping
        if handler is not None:
            self._call(handler, self, payload)

    def pong_received(self, payload: bytes) -> None:
        handler = self._handlers.pong
        if handler is not None:
            self._call(handler, self, payload)

    def close_received(self, code: int, reason: str) -> None:
        # The handshake is complete (our echo is queued, or theirs was the reply).  The
        # server closes TCP first (RFC 6455 section 7.1.1); it gets close_timeout to.
        self.flush_output()
        self._arm_close_timer(self._close_transport)

    def protocol_failed(self, code: int, reason: str) -> None:
        logger.info("closing %s: the server broke the protocol (%d %s)", self.url, code, reason)
        self._initiated_close = self._failed = True
        self._close_transport()

    def closing_started(self) -> None:
        if self.close_code_received == 0:
            self._initiated_close = True
            self._arm_close_timer(self.terminate)

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        return self.loop

    def _bound_handlers(self) -> RouteHandlers:
        return self._handlers

    def _unhandled(self, exc: BaseException) -> None:
        logger.error("unhandled error in a handler of the connection to %s; closing with 1011",
                     self.url, exc_info=exc)
        if self.ready_state == OPEN:
            self.close(1011, "internal error")

    def drained(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)
        handler = self._handlers.drain
        if handler is not None:
            self._call(handler, self)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        self.detach()
        if self._initiated_close and (self.close_code_received or self._failed):
            code, reason = self.close_code_sent, self.close_reason_sent
        elif self.close_code_received:
            code, reason = self.close_code_received, self.close_reason_received
        else:
            code, reason = 1006, ""
        self._close_code, self._close_reason = code, reason
        waiters, self._closed = self._closed, None
        for closed in waiters or ():
            if not closed.done():
                closed.set_result((code, reason))
        for waiter in (self._waiter, self._drain_waiter):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        self._waiter = self._drain_waiter = None
        handler = self._handlers.close
        if handler is not None:
            self._call(handler, self, code, reason)

    # ------------------------------------------------------------------ internals

    def _start(self, transport: asyncio.Transport, result: HandshakeResult,
               cork: LoopContext) -> None:
        """The 101 arrived: take over the transport and deliver the first frames."""
        self.transport = transport
        self._response = result
        self.subprotocol = result.subprotocol
        self.extensions = result.extensions
        if result.deflate is not None:
            self.enable_deflate(**result.deflate.engine_settings())  # type: ignore[arg-type]
        transport.set_protocol(self)
        # As on the server: the engine learns what the transport holds only from
        # pause/resume_writing, exact when pausing as soon as anything is left behind.
        transport.set_write_buffer_limits(high=1, low=0)
        self.attach_transport(transport, cork)
        handler = self._handlers.open
        if handler is not None:
            try:
                opened = handler(self)
                if handler.is_async:
                    self.pause_delivery()     # messages wait for an async open handler
                    if self._spawn(opened, resume=True).done():
                        self.resume_delivery()
            except Exception as exc:
                self.handler_failed(exc)
        if result.trailing:
            self.feed(result.trailing)

    def _arm_close_timer(self, action: Callable[[], None]) -> None:
        if self._close_timer is None and self.transport is not None:
            self._close_timer = self.loop.call_later(self.close_timeout, self._close_timed_out,
                                                     action)

    def _close_timed_out(self, action: Callable[[], None]) -> None:
        self._close_timer = None
        action()

    def _close_transport(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            self.flush_output()
            transport.close()
            if self._close_timer is not None:
                self._close_timer.cancel()
                self._close_timer = None
            # A server that never reads would keep close() waiting on our buffer.
            self._arm_close_timer(self.terminate)



class _HandshakeProtocol(asyncio.Protocol):
    """Sends the upgrade request and reads the answer; hands over to the engine on a 101."""

    __slots__ = ("handshake", "connect", "done", "loop", "transport")

    def __init__(self, handshake: ClientHandshake, connect: Connect,
                 done: asyncio.Future[tuple[HandshakeResult, ClientWebSocket | None]],
                 loop: asyncio.AbstractEventLoop) -> None:
        self.handshake = handshake
        self.connect = connect
        self.done = done
        self.loop = loop
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.handshake.request())  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        self._feed(data, False)

    def eof_received(self) -> bool:
        self._feed(b"", True)
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.done.done():
            # A connect that failed after it started (refused, unreachable) comes as the
            # transport's first error: the caller sees that error.
            error: BaseException
            if isinstance(exc, OSError) and exc.errno:
                target = self.handshake.target
                error = type(exc)(exc.errno, f"{exc.strerror} ({target.host_header}, "
                                             "during the opening handshake)")
            else:
                error = ConnectionError("connection lost during the opening handshake")
            self.done.set_exception(error)

    def _feed(self, data: bytes, eof: bool) -> None:
        if self.done.done():
            return
        transport = self.transport
        assert transport is not None
        try:
            result = self.handshake.feed(data, eof)
        except HandshakeError as exc:
            self.done.set_exception(exc)
            transport.close()
            return
        if result is None:
            return
        if result.status != 101:              # a redirect: the caller decides
            self.done.set_result((result, None))
            transport.close()
            return
        # Only now, the upgrade done, does the connection object exist.
        options = self.connect.options
        ws = ClientWebSocket(
            self.handshake.target.url, self.connect.handlers, self.loop,
            max_payload_length=options["max_payload_length"],
            backpressure_limit=options["backpressure_limit"], max_queue=options["max_queue"],
            close_timeout=options["close_timeout"])
        ws._start(transport, result, _cork_for(self.loop, options["busy_poll"]))
        self.done.set_result((result, ws))


_pollers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, SocketPoller] = \
    weakref.WeakKeyDictionary()


def _poller_for(loop: asyncio.AbstractEventLoop) -> SocketPoller:
    poller = _pollers.get(loop)
    if poller is None:
        poller = _pollers[loop] = SocketPoller(loop)
    return poller


#: The handlers of a connection given none (messages go to ``recv()``).
_NO_HANDLERS = bind_handlers({})


class _Redirect(Exception):
    def __init__(self, result: HandshakeResult) -> None:
        super().__init__(result.location)
        self.result = result


class Connect:
    """What ``connect()`` returns: ``await`` it for the connection, or use it as
    ``async with connect(...) as ws`` (closed with 1000 on the way out)."""

    def __init__(self, url: str, handlers: ClientHandlers | object | None,
                 options: dict[str, Any], handshake: ClientHandshake | None = None) -> None:
        self.url = url
        self.handlers = _NO_HANDLERS if handlers is None else bind_handlers(handlers)
        self.options = options
        self.ws: ClientWebSocket | None = None
        self._handshake = handshake      # the first attempt's, already checked
        self._expired = False            # open_timeout ran out

    def __await__(self) -> Generator[Any, None, ClientWebSocket]:
        return self._open().__await__()

    async def __aenter__(self) -> ClientWebSocket:
        self.ws = await self._open()
        return self.ws

    async def __aexit__(self, *exc_info: object) -> None:
        ws = self.ws
        if ws is None:
            return
        if ws.ready_state == OPEN:
            ws.close(1000)
        await ws.wait_closed()

    async def _open(self) -> ClientWebSocket:
        # As asyncio.timeout(open_timeout), which would ask for the running loop three times
        # (in CPython each ask is a getpid() system call): here once per connect.
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        assert task is not None
        cancelling = task.cancelling()
        timeout = self.options["open_timeout"]
        timer = loop.call_later(timeout, self._expire, task)
        try:
            return await self._open_following_redirects(loop)
        except asyncio.CancelledError:
            if self._expired and task.uncancel() <= cancelling:
                raise TimeoutError(f"no WebSocket connection to {self.url} within "
                                   f"{timeout:g} s (open_timeout)") from None
            raise
        finally:
            timer.cancel()

    def _expire(self, task: asyncio.Task[Any]) -> None:
        self._expired = True
        task.cancel()

    async def _open_following_redirects(self, loop: asyncio.AbstractEventLoop) -> ClientWebSocket:
        options = self.options
        url = self.url
        redirects = 0
        while True:
            try:
                return await self._open_once(url, loop)
            except _Redirect as redirect:
                location = redirect.result.location
                assert location is not None
                if not options["follow_redirects"]:
                    raise HandshakeError(
                        redirect.result.status,
                        f"redirected to {location} (pass follow_redirects=True to follow)",
                        dict(redirect.result.headers.raw_items())) from None
                redirects += 1
                if redirects > options["max_redirects"]:
                    raise HandshakeError(redirect.result.status,
                                         f"more than {options['max_redirects']} redirects"
                                         ) from None
                url = location

    async def _open_once(self, url: str, loop: asyncio.AbstractEventLoop) -> ClientWebSocket:
        options = self.options
        handshake = self._handshake
        self._handshake = None
        if handshake is None or handshake.target.url != url:
            handshake = ClientHandshake(
                parse_url(url), subprotocols=options["subprotocols"], headers=options["headers"],
                per_message_deflate=options["per_message_deflate"])
        target = handshake.target
        context = None
        if target.secure:
            context = options["ssl"] or _default_ssl_context()
        elif options["ssl"] is not None:
            raise ConfigurationError(f"tls is given but {url!r} is not a wss:// URL")
        done: asyncio.Future[tuple[HandshakeResult, ClientWebSocket | None]] = loop.create_future()
        protocol = functools.partial(_HandshakeProtocol, handshake, self, done, loop)

        server_hostname = target.host if context is not None else None
        transport: Any = None
        if context is None and options["unix"] is None:
            # Plain TCP to an address: harpia's own socket I/O, reads straight into the
            # engine (None for a name to resolve).
            transport = connect_transport(loop, _poller_for(loop), target.host, target.port,
                                          protocol())
        if transport is None:
            if options["unix"] is not None:
                transport, _ = await loop.create_unix_connection(
                    protocol, str(options["unix"]), ssl=context, server_hostname=server_hostname)
            else:
                transport, _ = await loop.create_connection(
                    protocol, target.host, target.port, ssl=context,
                    server_hostname=server_hostname)
        try:
            result, ws = await done
        except BaseException:
            transport.abort()
            raise
        if ws is None:
            raise _Redirect(result)
        return ws


def _check_limit(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"{name} must be an int >= {minimum}, not {value!r}")
    return value


def _check_seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigurationError(f"{name} must be a positive number of seconds, not {value!r}")
    return float(value)


def _check_busy_poll(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ConfigurationError(f"busy_poll must be a number of seconds between 0 and 1, not {value!r}")
    return float(value)


def connect(
    url: str,
    handlers: ClientHandlers | object | None = None,
    *,
    subprotocols: Sequence[str] | None = None,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    per_message_deflate: bool = False,
    max_payload_length: int = MAX_PAYLOAD_LENGTH,
    backpressure_limit: int = BACKPRESSURE_LIMIT,
    max_queue: int = MAX_QUEUE,
    tls: Mapping[str, Any] | ssl.SSLContext | None = None,
    unix: str | None = None,
    open_timeout: float = OPEN_TIMEOUT,
    close_timeout: float = CLOSE_TIMEOUT,
    follow_redirects: bool = False,
    max_redirects: int = MAX_REDIRECTS,
    busy_poll: float = 0.0,
) -> Connect:
    """Open a WebSocket connection to ``url`` (``ws://`` or ``wss://``).

    ``ws = await connect(url)`` or ``async with connect(url) as ws``.  ``handlers`` has the
    shape of a server route's (a mapping or an object with methods); without a
    ``message`` handler, messages are read with ``await ws.recv()`` or ``async for``.
    Raises ``HandshakeError`` (with ``status``, ``message`` holding the body, ``headers``)
    when the server refuses or answers wrongly, ``OSError`` when it cannot be reached,
    ``TimeoutError`` after ``open_timeout`` seconds.  ``busy_poll`` (seconds, 0 = off, at
    most 1) keeps the event loop polling that long after a read instead of sleeping, as the
    server's ``App(busy_poll=...)``: lower latency for request/response, paid in CPU.
    """
    if not isinstance(per_message_deflate, bool):
        raise ConfigurationError("per_message_deflate must be True or False, not "
                                 f"{type(per_message_deflate).__name__}")
    if isinstance(subprotocols, str):
        raise ConfigurationError("subprotocols must be a list of names, not one str")
    header_list = [] if headers is None else list(
        headers.items() if isinstance(headers, Mapping) else headers)
    options: dict[str, Any] = {
        "subprotocols": list(subprotocols or ()),
        "headers": header_list,
        "per_message_deflate": per_message_deflate,
        "max_payload_length": _check_limit("max_payload_length", max_payload_length),
        "backpressure_limit": _check_limit("backpressure_limit", backpressure_limit),
        "max_queue": _check_limit("max_queue", max_queue),
        "ssl": None if tls is None else client_ssl_context(tls),
        "unix": unix,
        "open_timeout": _check_seconds("open_timeout", open_timeout),
        "close_timeout": _check_seconds("close_timeout", close_timeout),
        "follow_redirects": bool(follow_redirects),
        "max_redirects": _check_limit("max_redirects", max_redirects, 0),
        "busy_poll": _check_busy_poll(busy_poll),
    }
    # A bad URL, header or subprotocol fails here, not on the first await.
    handshake = ClientHandshake(parse_url(url), subprotocols=options["subprotocols"],
                                headers=header_list, per_message_deflate=per_message_deflate)
    return Connect(url, handlers, options, handshake)

