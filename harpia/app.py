"""The application object: it builds the router, the hub and the settings, and hands
the work to them — routes to the router, connections, topics and publish to the hub,
sockets to listeners (``server``) and processes to ``workers``."""
from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

from .accept import Accept
from .asgi.mount import AsgiApp, AsgiMounts
from .backplane import Backplane, make_backplane
from .connection import ServerWebSocket
from .errors import ConfigurationError
from .handler_types import HandlerObject, WebSocketHandlers
from .handlers import bind_handlers
from .histograms import Latencies, prometheus_latencies
from .http_response import Response
from .hub import Hub
from .limits import ConnectionsPerAddress
from .options import route_options
from .request import Request
from .routing import HttpRoute, Router, WebSocketRoute
from .server import Listener, run, serve_until_signal
from .stats import prometheus_text
from .topics import ConnectionSet
from .worker_metrics import WorkerMetrics

__all__ = ["App", "WebSocketNamespace", "harpia"]

logger = logging.getLogger("harpia")

T = TypeVar("T")


class WebSocketNamespace:
    """``app.websocket``: the live connections of this process, and topic counts."""

    __slots__ = ("_hub", "_publish")

    def __init__(self, hub: Hub, publish: Callable[..., int]) -> None:
        self._hub = hub
        self._publish = publish

    @property
    def connections(self) -> ConnectionSet[ServerWebSocket[Any]]:
        """Every open connection of this process (all routes, all listeners)."""
        return self._hub.connections

    def subscriber_count(self, topic: str) -> int:
        """Subscribers of ``topic`` in this process (with ``workers`` or a ``pubsub``
        backplane, the other processes' subscribers are not counted)."""
        return self._hub.topics.subscriber_count(topic)

    subscriberCount = subscriber_count  # noqa: N815 - Bun's spelling

    def publish(self, topic: str, message: str | bytes | bytearray | memoryview,
                compress: bool | None = None) -> int:
        """``app.publish``, as Bun's ``server.publish``."""
        return self._publish(topic, message, compress)


class App:
    """A harpia application: ``app = harpia()``, then ``app.ws(...)``, then ``app.listen()``."""

    def __init__(
        self,
        *,
        handshake_timeout: float = 10.0,
        close_timeout: float = 5.0,
        max_connections: int | None = None,
        max_pending_handshakes: int | None = 1024,
        max_pending_tls_handshakes: int | None = 256,
        pubsub: str | Backplane | None = None,
        busy_poll: float = 0.0,
        max_connections_per_ip: int | None = None,
        latency_histograms: bool = True,
        loop_transport: bool = False,
    ) -> None:
        for name, value in (("handshake_timeout", handshake_timeout), ("close_timeout", close_timeout)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigurationError(f"{name} must be a positive number of seconds")
        for name, cap in (("max_connections", max_connections),
                          ("max_pending_handshakes", max_pending_handshakes),
                          ("max_pending_tls_handshakes", max_pending_tls_handshakes),
                          ("max_connections_per_ip", max_connections_per_ip)):
            if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
                raise ConfigurationError(f"{name} must be a positive int or None")
        self.busy_poll = busy_poll
        #: Seconds a client gets to send its request head (slowloris bound); 10 s as websockets.
        self.handshake_timeout = float(handshake_timeout)
        #: Seconds to wait for the peer's close frame after ours, or for our close frame to be
        #: written to a peer that closed first but does not read, before dropping TCP.
        self.close_timeout = float(close_timeout)
        #: WebSocket connections (open or closing) this process serves at once; over it an
        #: upgrade is answered 503.  None: no cap (memory is bounded per connection).
        self.max_connections = max_connections
        #: TCP connections still sending their request head (a mounted ASGI app's
        #: keep-alive connections between requests too); over it a new one is closed at
        #: once, unless an idle keep-alive one can be closed instead.  1024 bounds a
        #: slowloris flood to ~1024 x 64 KiB of head buffers while leaving room for
        #: ~100,000 handshakes/s at a 10 ms round trip.
        self.max_pending_handshakes = max_pending_handshakes
        #: Of those, connections still in their TLS handshake (they count in both caps).
        #: asyncio's TLS layer holds ~300 KiB per connection from its accept (uvloop's
        #: ~52 KiB): 256 bounds a flood of unfinished TLS handshakes to ~77 MiB, and still
        #: allows more handshakes a second than one core can compute.
        self.max_pending_tls_handshakes = max_pending_tls_handshakes
        #: WebSocket connections one client address may hold open in this process; over it
        #: an upgrade is answered 429 with Retry-After.  None: no cap.  See harpia/limits.py.
        self.max_connections_per_ip = max_connections_per_ip
        if not isinstance(loop_transport, bool):
            raise ConfigurationError("loop_transport must be True or False")
        #: A compatibility and debugging switch: True lets the event loop's own transports
        #: accept, read and write plain TCP and Unix sockets, as TLS sockets always are,
        #: instead of harpia's (see docs/performance.md).  Read when a listener starts.
        self.loop_transport = loop_transport
        if not isinstance(latency_histograms, bool):
            raise ConfigurationError("latency_histograms must be True or False")
        #: The routes, WebSocket and HTTP, by path.
        self.router: Router[WebSocketRoute | HttpRoute] = Router()
        #: Open connections, topics, counters, latency histograms and the cross-process
        #: backplane (``pubsub="redis://..."`` or a ``Backplane``).
        self.hub = Hub(
            make_backplane(pubsub),
            latency=Latencies() if latency_histograms else None,
            per_address=(None if max_connections_per_ip is None
                         else ConnectionsPerAddress(max_connections_per_ip)))
        self.websocket = WebSocketNamespace(self.hub, self.publish)
        self._warned_publish_unserved = False
        #: Set in each worker of ``listen(workers=N)``: scrapes answer for all the workers.
        self.worker_metrics: WorkerMetrics | None = None
        #: ASGI apps mounted with ``mount`` (None until the first one).
        self.asgi: AsgiMounts | None = None

    @property
    def busy_poll(self) -> float:
        """Seconds the event loop keeps polling, instead of sleeping, after a read (0: off).

        Trades CPU while traffic flows for latency: a sleeping loop needs a wake-up to see
        the next request (tens of microseconds on a VM).  See docs/performance.md.  Read
        when a listener starts."""
        return self._busy_poll

    @busy_poll.setter
    def busy_poll(self, seconds: float) -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) \
                or not 0 <= seconds <= 1:
            raise ConfigurationError("busy_poll must be a number of seconds between 0 and 1")
        self._busy_poll = float(seconds)

    # ------------------------------------------------------------------ routes

    def ws(
        self,
        path: str,
        handlers: WebSocketHandlers[T] | HandlerObject,
        *,
        data: Callable[[], T] | None = None,
        upgrade: Callable[[Request], T | Accept[T] | None | Awaitable[T | Accept[T] | None]]
        | None = None,
        **options: Any,
    ) -> None:
        """Serve WebSocket connections on ``path`` (``/room/:roomId`` patterns allowed).

        ``handlers`` is a mapping or an object with any of ``open``, ``message``, ``close``,
        ``error``, ``drain``, ``ping``, ``pong``; ``data`` makes each connection's
        ``ws.data`` (a class or factory), ``upgrade(request)`` runs before the 101 and
        returns it instead; the other ``options`` are ``RouteOptions`` fields.
        """
        if data is not None:
            options["data"] = data
        if upgrade is not None:
            options["upgrade"] = upgrade
        bound = bind_handlers(handlers)
        self.router.add(path, WebSocketRoute(path, bound, route_options(options)))

    def get(self, path: str, handler: Callable[..., Any], *, content_type: str | None = None) -> None:
        """Answer plain HTTP GET (and HEAD) on ``path``.  ``handler(request)`` returns
        ``str``, ``bytes``, a ``dict``/``list`` (JSON) or a ``harpia.Response``."""
        if not callable(handler):
            raise ConfigurationError(f"the handler of GET {path!r} must be callable")
        self.router.add(path, HttpRoute(path, handler, content_type))

    def mount(self, path: str, asgi_app: AsgiApp, **options: Any) -> None:
        """Serve an ASGI 3 app (FastAPI, Starlette) for every request under ``path`` that no
        harpia route takes: HTTP requests and WebSocket upgrades alike.

        ``options``: ``max_body_size``, ``keep_alive_timeout``, ``body_buffer`` for HTTP
        (``harpia.asgi.HttpOptions``), and any ``app.ws`` route option for the app's
        WebSockets (``max_payload_length``, ``backpressure_limit``,
        ``per_message_deflate``...).  See docs/howto/fastapi.md."""
        if self.asgi is None:
            self.asgi = AsgiMounts()
        self.asgi.add(path, asgi_app, options)

    def use_pubsub(self, pubsub: str | Backplane) -> None:
        """Set the cross-process backplane (as ``harpia(pubsub=...)``) before serving."""
        self.hub.use_backplane(make_backplane(pubsub))

    # ------------------------------------------------------------------ metrics

    def stats(self, *, topics: int = 100) -> dict[str, Any]:
        """Counters of this process: open/opened connections (and the open HTTP
        connections of mounted ASGI apps), closes by code, refused handshakes by status,
        messages and bytes in and out, backpressure events, dropped sends, topics and
        subscriptions in all, refused subscribes, and subscribers per topic for at most
        ``topics`` topics (the oldest: clients may make millions)."""
        asgi = self.asgi
        return self.hub.stats_snapshot(topics, 0 if asgi is None else len(asgi.connections))

    def metrics_text(self, *, topics: int = 0) -> str:
        """``stats()`` in the Prometheus text format; per-topic series only for
        ``topics`` > 0, for at most that many topics.  With ``workers=N``, the totals of
        all the workers plus per-worker series (see harpia/worker_metrics.py)."""
        latency = self.latency_snapshot()
        if self.worker_metrics is not None:
            return self.worker_metrics.prometheus_text(self.stats(topics=topics), latency, topics)
        return prometheus_text(self.stats(topics=topics)) + (
            prometheus_latencies(latency) if latency else "")

    def metrics_totals(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The figures a scrape reports: ``stats()`` and the latency histograms, summed
        over the workers under ``workers=N``."""
        latency = self.latency_snapshot()
        if self.worker_metrics is not None:
            stats, histograms, _ = self.worker_metrics.totals(self.stats(), latency)
            return stats, histograms
        return self.stats(), latency or {}

    def latency_snapshot(self) -> dict[str, Any] | None:
        """The latency histograms of this process, or None with ``latency_histograms=False``."""
        latency = self.hub.latency
        return None if latency is None else latency.snapshot()

    def expose_metrics(self, path: str = "/metrics", *, topics: int = 0) -> None:
        """Serve ``metrics_text(topics=topics)`` on ``path`` for a Prometheus scraper."""
        self.get(path, lambda request: Response(
            self.metrics_text(topics=topics),
            content_type="text/plain; version=0.0.4; charset=utf-8"))

    # ------------------------------------------------------------------ pub/sub

    def publish(self, topic: str, message: str | bytes | bytearray | memoryview,
                compress: bool | None = None) -> int:
        """Send ``message`` to every subscriber of ``topic``; returns how many took it in this
        process (with a ``pubsub`` backplane it also goes to every other process).

        ``compress`` (subscribers with permessage-deflate): None compresses messages of at
        least the route's ``compress_threshold``, True always, False never.  Other
        processes of a backplane apply their own default.

        Before the app is served (no ``listen``/``serve``/test client running yet) no
        connection can be subscribed: the publish reaches nobody, returns 0 and logs a
        warning, once per app."""
        if not self.hub.servers and not self._warned_publish_unserved:
            self._warned_publish_unserved = True
            logger.warning("app.publish(%r) before the app is served: no connection can be "
                           "subscribed yet, so it reached nobody", topic)
        return self.hub.publish(topic, message, None, compress)

    def publish_threadsafe(self, topic: str, message: str | bytes) -> None:
        """``publish`` from another thread: runs once, on the loop of the first listener
        (the topic registry is one for the whole app)."""
        self.hub.publish_threadsafe(topic, message)

    # ------------------------------------------------------------------ serving

    def serve(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: Mapping[str, Any] | ssl.SSLContext | None = None,
        reuse_port: bool = False,
        unix: str | None = None,
        sock: socket.socket | None = None,
        proxy_protocol: bool = False,
        forwarded_allow_ips: Iterable[str] | None = None,
    ) -> Listener:
        """A listener for a running loop: ``async with app.serve(port=0) as server``.

        ``unix=PATH`` serves on a Unix domain socket, ``sock=`` on a listening socket made
        elsewhere; ``proxy_protocol`` and ``forwarded_allow_ips``: see docs/operations.md."""
        return Listener(self, host=host, port=port, tls=tls, reuse_port=reuse_port, unix=unix,
                        sock=sock, proxy_protocol=proxy_protocol,
                        forwarded_allow_ips=forwarded_allow_ips)

    def listen(
        self,
        options: Mapping[str, Any] | None = None,
        /,
        *,
        host: str = "0.0.0.0",
        port: int = 3000,
        tls: Mapping[str, Any] | ssl.SSLContext | None = None,
        workers: int = 1,
        unix: str | None = None,
        sock: socket.socket | None = None,
        proxy_protocol: bool = False,
        forwarded_allow_ips: Iterable[str] | None = None,
    ) -> None:
        """Serve until SIGINT/SIGTERM, then shut down gracefully (1001 to every client).

        ``app.listen({"port": 3000, "tls": {...}})`` is accepted too, as in Bun.
        """
        if options is not None:
            unknown = set(options) - {"host", "port", "tls", "workers", "hostname", "unix"}
            if unknown:
                raise ConfigurationError(f"unknown listen option(s): {', '.join(sorted(unknown))}")
            host = options.get("host", options.get("hostname", host))
            port = options.get("port", port)
            tls = options.get("tls", tls)
            workers = options.get("workers", workers)
            unix = options.get("unix", unix)
        where: dict[str, Any] = {"proxy_protocol": proxy_protocol,
                                 "forwarded_allow_ips": forwarded_allow_ips}
        if workers != 1:
            from .workers import run_workers
            run_workers(self, host=host, port=port, tls=tls, workers=workers, unix=unix,
                        sock=sock, listener_options=where)
            return
        run(serve_until_signal(Listener(self, host=host, port=port, tls=tls, unix=unix, sock=sock,
                                        **where)))


def harpia(**settings: Any) -> App:
    """Create an app: ``app = harpia()``."""
    return App(**settings)
