"""``ServerWebSocket``: the frame engine bound to an asyncio transport and a route.

This is the protocol adapter.  The class *is* a ``FrameEngine`` (Cython), so the
transport calls the engine's ``data_received`` directly and the engine calls the route's
message handler directly: no Python frame sits between a read and the user's code.  What
lives here are the rare events — ping, close, errors, drain, flow control — and the
user-facing API around the engine.

A connection reports to two things: the app's ``Hub`` (open connections, topics,
counters, publish) and the listener that accepted it, known only as a ``ConnectionHost``
(its loop, its close timeout, and three callbacks), so this module imports no server.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from typing import Any, Generic, Protocol, TypeVar

from ._frames import OPEN, FrameEngine
from ._upgrade import pack_header_fields
from .engine_protocol import EngineProtocol
from .handlers import RouteHandlers
from .http_head import Headers, RequestHead
from .hub import Hub
from .limits import MessageRate, limit_message_rate, over_rate
from .request import query_first_values, request_url
from .routing import WebSocketRoute

__all__ = ["ServerWebSocket", "ConnectionHost", "AttributeBag", "peer_address"]

logger = logging.getLogger("harpia")

T = TypeVar("T")

#: Numbers connections for ``ws.id``; with the process id in front they are unique across
#: the workers of one server too.
_serials = itertools.count(1)


def _ignore() -> None:
    """The message handler of a route that has none."""


#: ``remote_address`` not asked for yet: most routes never read it, and turning the
#: transport's address into a tuple is Python work per connection.  Both loops record
#: the peer when the connection is made, so it is still known after the socket is gone.
UNRESOLVED: Any = object()


def unpack_header_fields(packed: str) -> Headers:
    """The :class:`Headers` that ``pack_header_fields`` (in ``_upgrade``: it runs for every
    connection, so in C) packed."""
    if not packed:
        return Headers()
    parts = packed.split("\n")
    return Headers(zip(parts[::2], parts[1::2]))


def _packed_host(packed: str) -> str:
    """The first ``Host`` value in packed fields, '' if none: what ``ws.url`` needs."""
    parts = packed.split("\n")
    for i in range(0, len(parts) - 1, 2):
        if parts[i].lower() == "host":
            return parts[i + 1]
    return ""


def peer_address(transport: asyncio.BaseTransport | None) -> tuple[str, int] | None:
    """The transport's peer as ``(host, port)``, or None (closed, or not a TCP socket)."""
    if transport is None:
        return None
    try:
        peer = transport.get_extra_info("peername")
    except (OSError, RuntimeError):   # the socket is already gone
        return None
    if isinstance(peer, tuple) and len(peer) >= 2:
        return (str(peer[0]), int(peer[1]))
    return None


class AttributeBag:
    """The default ``ws.data``: a plain object that takes any attribute, holding ``url``."""

    def __init__(self, url: str) -> None:
        self.url = url

    def __repr__(self) -> str:
        return f"AttributeBag({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


class ConnectionHost(Protocol):
    """What a connection needs from the listener that accepted it."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    @property
    def close_timeout(self) -> float:
        """Seconds to wait for the peer's side of the closing handshake."""

    def connection_closing(self, ws: ServerWebSocket[Any]) -> None:
        """``ws`` left the OPEN state (closing started, or the transport was lost)."""

    def connection_ended(self, ws: ServerWebSocket[Any]) -> None:
        """``ws``'s transport is gone."""

    def protocol_error(self, ws: ServerWebSocket[Any], code: int, reason: str) -> None:
        """The peer broke the protocol; ``ws`` is closing with ``code``."""


class ServerWebSocket(EngineProtocol, Generic[T]):
    """One client connection, as handlers see it (``ws``)."""

    __slots__ = (
        "hub", "route", "listener", "_path", "_raw_query", "_header_fields", "_params",
        "_remote_address",
        "subprotocol", "extensions", "secure", "_data", "_topics", "_initiated_close",
        "_close_timer", "_close_notified", "_ping_outstanding", "_opened_at",
        "_serial", "_rate",
    )

    def __init__(
        self,
        hub: Hub,
        route: WebSocketRoute,
        listener: ConnectionHost,
        transport: asyncio.Transport,
        head: RequestHead,
        params: dict[str, str],
        remote_address: tuple[str, int] | None | object,
        subprotocol: str | None,
        secure: bool,
        data: T | None = None,
    ) -> None:
        options = route.options
        super().__init__(
            max_payload_length=options.max_payload_length,
            backpressure_limit=options.backpressure_limit,
            close_on_backpressure_limit=options.close_on_backpressure_limit,
            inbound_limit=options.max_inbound_backlog,
        )
        #: The hub of the app serving this connection: open connections, topics, counters.
        self.hub = hub
        self.route = route
        self.listener = listener
        self.transport = transport
        # A static route's path equals its pattern: keep that one string, not a copy each.
        path = head.path
        self._path = route.pattern if path == route.pattern else path
        self._raw_query = head.raw_query
        # Packed until ws.headers is read, then the Headers, kept (see pack_header_fields).
        self._header_fields: str | Headers = pack_header_fields(head.headers)
        # None until read when empty (a static route): an empty dict per connection is 64 B.
        self._params: dict[str, str] | None = params or None
        self._remote_address = remote_address
        #: The subprotocol agreed in the handshake (one of the route's ``subprotocols``), or None.
        self.subprotocol = subprotocol
        #: The ``Sec-WebSocket-Extensions`` answered in the handshake (permessage-deflate), or None.
        self.extensions: str | None = None
        #: True on TLS (``wss://``).
        self.secure = secure
        self._data: Any = data
        self._topics: set[str] | None = None
        self._initiated_close = False
        self._close_timer: asyncio.TimerHandle | None = None
        self._close_notified = False
        self._ping_outstanding = False
        message = route.handlers.message
        if message is not None:
            self.bind_message_handler(message.fn, message.arity, message.is_async)
        else:
            # Unbound, the engine keeps every message for events_received(), which nobody
            # calls here: a client could grow that list without bound.  Drop them instead.
            self.bind_message_handler(_ignore, 0, False)
        self._serial = next(_serials)
        if hub.latency is not None and message is not None:
            self.handler_timer = hub.latency.handler_timer
        self._rate: MessageRate | None = None
        if options.max_messages_per_second is not None:
            self._rate = limit_message_rate(self, message, options)

    # ------------------------------------------------------------------ user API

    @property
    def data(self) -> T:
        """What the route's ``upgrade`` hook returned, else ``data()``, else a bag with ``url``."""
        if self._data is None:
            self._data = AttributeBag(self.url)
        return self._data  # type: ignore[no-any-return]

    @data.setter
    def data(self, value: T) -> None:
        self._data = value

    @property
    def params(self) -> dict[str, str]:
        """Route parameters: ``/room/:roomId`` matched by ``/room/7`` gives ``{"roomId": "7"}``."""
        params = self._params
        if params is None:
            params = self._params = {}
        return params

    @params.setter
    def params(self, value: dict[str, str]) -> None:
        self._params = value

    @property
    def id(self) -> str:
        """A short id of this connection (``"<pid hex>-<n hex>"``), the one in log lines."""
        return f"{os.getpid():x}-{self._serial:x}"

    @property
    def remote_address(self) -> tuple[str, int] | None:
        """The client's ``(host, port)``, or None when unknown (e.g. a Unix socket)."""
        address = self._remote_address
        if address is UNRESOLVED:
            address = self._remote_address = peer_address(self.transport)
        return address  # type: ignore[return-value]

    @property
    def path(self) -> str:
        """The request path, percent-encoded as received, without the query."""
        return self._path

    @property
    def url(self) -> str:
        """The absolute URL the client asked for: ``ws://host/path?query`` (``wss://`` on TLS)."""
        fields = self._header_fields
        host = fields.get("host", "") if isinstance(fields, Headers) else _packed_host(fields)
        return request_url(self.secure, {"host": host}, self._path, self._raw_query)

    @property
    def query(self) -> dict[str, str]:
        """Query parameters, name -> first value."""
        return query_first_values(self._raw_query)

    @property
    def headers(self) -> Headers:
        """The upgrade request's headers (case-insensitive)."""
        fields = self._header_fields
        if isinstance(fields, str):
            fields = self._header_fields = unpack_header_fields(fields)
        return fields

    def subscribe(self, topic: str) -> bool:
        """Receive what is published to ``topic``; False if already subscribed, if the
        connection is not open, or if it has ``max_subscriptions`` topics already (that
        refusal is counted in ``app.stats()["subscriptions_refused"]``)."""
        if self.ready_state != OPEN:
            return False
        topics = self._topics
        if topics is None:
            topics = self._topics = set()
        elif topic in topics:
            return False
        if len(topics) >= self.route.options.max_subscriptions:
            self.hub.stats.subscriptions_refused += 1
            return False
        topics.add(topic)
        return self.hub.topics.subscribe(topic, self)

    def unsubscribe(self, topic: str) -> bool:
        """Stop receiving what is published to ``topic``; False if not subscribed."""
        if self._topics is None or topic not in self._topics:
            return False
        self._topics.discard(topic)
        return self.hub.topics.unsubscribe(topic, self)

    def is_subscribed(self, topic: str) -> bool:
        """True if this connection is subscribed to ``topic``."""
        return self._topics is not None and topic in self._topics

    isSubscribed = is_subscribed  # noqa: N815 - Bun's spelling

    @property
    def subscriptions(self) -> list[str]:
        """The topics this connection is subscribed to, sorted."""
        return sorted(self._topics) if self._topics else []

    def publish(self, topic: str, message: str | bytes | bytearray | memoryview,
                compress: bool | None = None) -> int:
        """Send ``message`` to every subscriber of ``topic`` (not to this connection unless
        the route has ``publish_to_self=True``); returns how many local subscribers took it.
        ``compress`` as in ``app.publish``."""
        exclude = None if self.route.options.publish_to_self else self
        return self.hub.publish(topic, message, exclude, compress)

    def cork(self) -> None:
        """Nothing to do: every send is already batched per event-loop turn."""

    def __repr__(self) -> str:
        state = ("CONNECTING", "OPEN", "CLOSING", "CLOSED")[self.ready_state]
        return f"<ServerWebSocket {self.id} {self._path} {state} {self.remote_address}>"

    # ------------------------------------------------------------------ engine hooks

    def ping_received(self, payload: bytes) -> None:
        if self._rate is not None and not self._rate.take():
            over_rate(self)
            return
        handler = self.route.handlers.ping
        if handler is not None:
            self._call(handler, self, payload)

    def pong_received(self, payload: bytes) -> None:
        self._ping_outstanding = False
        if self._rate is not None and not self._rate.take():
            over_rate(self)
            return
        handler = self.route.handlers.pong
        if handler is not None:
            self._call(handler, self, payload)

    def close_received(self, code: int, reason: str) -> None:
        # The close handshake is complete (our echo is queued): as the server, close TCP.
        self._close_transport()

    def protocol_failed(self, code: int, reason: str) -> None:
        self.listener.protocol_error(self, code, reason)
        self._close_transport()

    def closing_started(self) -> None:
        self.hub.connection_closing(self)
        self.listener.connection_closing(self)
        if self.close_code_received == 0:
            if self.close_on_backpressure_limit and self.close_code_sent == 1013 and \
                    FrameEngine.buffered_amount.__get__(self) > self.backpressure_limit:
                # Closed because the client does not read: our close frame would wait
                # behind up to the limit of output, held for the whole close timeout.
                # Drop it all now (the close handler still gets 1013); the frame was
                # best effort anyway.
                self._initiated_close = True
                self.transport.abort()
                return
            # We spoke first: wait a bounded time for the peer's close frame.
            self._initiated_close = True
            loop = self.listener.loop
            self._close_timer = loop.call_later(
                self.listener.close_timeout, self._close_timed_out)

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        return self.listener.loop

    def _bound_handlers(self) -> RouteHandlers:
        return self.route.handlers

    def _unhandled(self, exc: BaseException) -> None:
        logger.error("unhandled error in a handler of %s (connection %s); closing with 1011",
                     self.route.pattern, self.id, exc_info=exc,
                     extra={"connection_id": self.id})
        if self.ready_state == OPEN:
            self.close(1011, "internal error")

    def drained(self) -> None:
        handler = self.route.handlers.drain
        if handler is not None:
            self._call(handler, self)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        was_open = self.ready_state == OPEN
        self.detach()
        if was_open:
            self.hub.connection_closing(self)
            self.listener.connection_closing(self)
        topics, self._topics = self._topics, None
        if topics:
            self.hub.connection_ended(self, topics, self.listener.loop.call_soon)
        self.listener.connection_ended(self)
        self._notify_close()

    # ------------------------------------------------------------------ internals

    def handshake_completed(self) -> None:
        """Called by the listener once the 101 is written: the connection is open."""
        self.hub.connection_opened(self)
        self._opened_at = time.monotonic()
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("open %s %s from %s", self.id, self._path, self.remote_address,
                         extra={"connection_id": self.id})
        handler = self.route.handlers.open
        if handler is None:
            return
        try:
            result = handler(self)
            if handler.is_async:
                # Messages wait until an async open handler has finished.
                self.pause_delivery()
                task = self._spawn(result, resume=True)
                if task.done():
                    self.resume_delivery()
        except Exception as exc:
            self.handler_failed(exc)

    def _notify_close(self) -> None:
        if self._close_notified:
            return
        self._close_notified = True
        if self._initiated_close:
            code, reason = self.close_code_sent, self.close_reason_sent
        elif self.close_code_received:
            code, reason = self.close_code_received, self.close_reason_received
        else:
            code, reason = 1006, ""
        self.hub.connection_closed(self, code)
        if self.hub.tracer is not None:
            self.hub.tracer.closed(self, code)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("close %s %s from %s: code %d%s after %.3f s", self.id, self._path,
                         self.remote_address, code, f" ({reason})" if reason else "",
                         time.monotonic() - self._opened_at, extra={"connection_id": self.id})
        handler = self.route.handlers.close
        if handler is not None:
            self._call(handler, self, code, reason)

    def _close_transport(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            self.flush_output()
            transport.close()
            # close() waits until what is buffered is written: a peer that closed but never
            # reads would keep the connection, and its buffers, for as long as it likes.
            # With nothing buffered a plain socket closes now and needs no timer; TLS still
            # waits for the peer's close_notify.
            if self._close_timer is None and (self.secure or transport.get_write_buffer_size()):
                self._close_timer = self.listener.loop.call_later(
                    self.listener.close_timeout, self._close_timed_out)

    def _close_timed_out(self) -> None:
        self._close_timer = None
        if self.transport is not None:
            self.transport.abort()

    def keepalive_ping(self) -> None:
        """Ping a quiet client, unless the previous keep-alive ping is still unanswered."""
        if not self._ping_outstanding:
            self._ping_outstanding = True
            self.ping()

    def start_closing_for_shutdown(self, code: int = 1001, reason: str = "server shutting down") -> None:
        if self.ready_state == OPEN:
            self.close(code, reason)

