"""The hub of one app: its open connections, topics, counters and backplane, and publish.

Every listener of an app serves the same hub, and every connection reports to it: it
becomes part of ``connections`` once open, subscribes through it, and leaves its counters
in ``stats`` when it ends.  A publish goes to the local subscribers (serialized once, in
the engine) and then to the backplane, which carries it to the other processes.

The hub knows its listeners only as ``ServingPoint``s (a loop and two counts), so it sits
below the server layer and imports nothing above the protocol pieces.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from .backplane import Backplane
from .errors import ConfigurationError
from .histograms import Latencies
from .limits import ConnectionsPerAddress
from .stats import AppStats
from .topics import ConnectionSet, TopicRegistry

__all__ = ["Hub", "ServingPoint", "ConnectionObserver"]


class ConnectionObserver(Protocol):
    """Told of every upgrade and close (``harpia.otel.instrument(app)`` sets one)."""

    def upgraded(self, ws: Any, elapsed: float) -> None: ...

    def closed(self, ws: Any, code: int) -> None: ...


class ServingPoint(Protocol):
    """What the hub needs from a listener serving it."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    def handshakes_in_progress(self) -> int:
        """Its TCP connections still in their HTTP stage."""

    def connections_held(self) -> int:
        """Its WebSocket connections, open or closing."""

    @property
    def tls_handshaking(self) -> int:
        """Its TCP connections still in their TLS handshake."""


class Hub:
    """The shared state of one app's connections; built by the app, served by listeners."""

    __slots__ = ("connections", "topics", "stats", "latency", "per_address", "tracer", "servers",
                 "_backplane", "_backplane_task", "_backplane_loop", "_backplane_users")

    def __init__(self, backplane: Backplane | None = None, *, latency: Latencies | None = None,
                 per_address: ConnectionsPerAddress | None = None) -> None:
        #: Every open connection of this process (all routes, all listeners).
        self.connections: ConnectionSet[Any] = ConnectionSet()
        self.topics = TopicRegistry()
        self.stats = AppStats()
        #: Upgrade, message handler and publish latency histograms, or None.
        self.latency = latency
        #: Open connections per client address (``max_connections_per_ip``), or None.
        self.per_address = per_address
        #: Spans per upgrade and connection (``harpia.otel.instrument(app)``), or None.
        self.tracer: ConnectionObserver | None = None
        #: The listeners serving this hub, in the order they started.
        self.servers: list[ServingPoint] = []
        self._backplane = backplane
        self._backplane_task: asyncio.Task[None] | None = None
        self._backplane_loop: asyncio.AbstractEventLoop | None = None
        self._backplane_users: set[ServingPoint] = set()

    # ------------------------------------------------------------------ connections

    def connection_opened(self, connection: Any) -> None:
        self.connections.add(connection)
        self.stats.opened += 1

    def connection_closing(self, connection: Any) -> None:
        """Closing started (or the transport was lost): no longer in ``connections``."""
        self.connections.discard(connection)

    def connection_ended(self, connection: Any, topics: set[str],
                         call_soon: Callable[..., object]) -> None:
        """The transport is gone: drop its subscriptions, in batches over loop turns when
        there are many (a client that joined thousands of rooms): the close must not stall
        every other connection."""
        self.topics.unsubscribe_all(topics, connection, call_soon)

    def connection_closed(self, connection: Any, code: int) -> None:
        """Count the close and keep the connection's engine counters."""
        self.stats.connection_closed(connection, code)

    def stats_snapshot(self, topic_limit: int, http_connections: int = 0) -> dict[str, Any]:
        """``app.stats()``: subscribers per topic for at most ``topic_limit`` topics, and
        the open HTTP connections of mounted ASGI apps (which the app knows, not the hub)."""
        registry = self.topics
        return self.stats.snapshot(self.connections.snapshot(), registry.first_topics(topic_limit),
                                   registry.topic_count(), registry.subscriptions,
                                   http_connections)

    # ------------------------------------------------------------------ pub/sub

    def publish(self, topic: str, message: str | bytes | bytearray | memoryview,
                exclude: Any = None, compress: bool | None = None) -> int:
        """Deliver to the local subscribers but ``exclude``, then hand to the backplane;
        returns how many local subscribers took it."""
        taken = self.topics.publish(topic, message, exclude, compress)
        if taken and self.latency is not None:
            self.latency.published()
        backplane = self._backplane
        if backplane is not None:
            # Local subscribers have it already; the backplane must not bring it back here.
            backplane.publish(topic, message)
        return taken

    def publish_threadsafe(self, topic: str, message: str | bytes) -> None:
        """``publish`` from another thread, on the loop of the first listener (if any)."""
        servers = list(self.servers)
        if servers:
            servers[0].loop.call_soon_threadsafe(self.publish, topic, message)

    # ------------------------------------------------------------------ backplane

    @property
    def backplane(self) -> Backplane | None:
        """The cross-process broker, or None."""
        return self._backplane

    def use_backplane(self, backplane: Backplane | None) -> None:
        if self.servers:
            raise ConfigurationError("set the pubsub backplane before the app is served")
        self._backplane = backplane

    async def attach(self, server: ServingPoint) -> None:
        """A listener starts serving (after binding): the backplane runs while at least one
        listener does, on the loop of the listeners.  Raises what the backplane's start
        raised; the listener is then not attached."""
        backplane = self._backplane
        if backplane is not None:
            await self._start_backplane(server, backplane)
        self.servers.append(server)

    async def detach(self, server: ServingPoint) -> None:
        """A listener stopped: the last one stops the backplane."""
        if server in self.servers:
            self.servers.remove(server)
        if server not in self._backplane_users:
            return
        self._backplane_users.discard(server)
        if self._backplane_users or self._backplane is None or self._backplane_task is None:
            return
        task = self._backplane_task
        self._backplane_detach()
        if not task.done():  # still connecting: cancelling start() cleans it up
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return
        if task.cancelled() or task.exception() is not None:
            return  # it never started
        await self._backplane.stop()

    async def _start_backplane(self, server: ServingPoint, backplane: Backplane) -> None:
        loop = asyncio.get_running_loop()
        if self._backplane_task is None:
            self._backplane_loop = loop
            self.topics.on_first_subscriber = backplane.subscribe
            self.topics.on_last_subscriber = backplane.unsubscribe
            self._backplane_task = loop.create_task(
                backplane.start(self.topics.publish_serialized, self.topics.topics()))
        elif self._backplane_loop is not loop:
            raise ConfigurationError(
                "with a pubsub backplane every listener of the app must run on one event loop")
        self._backplane_users.add(server)
        task = self._backplane_task
        try:
            await asyncio.shield(task)
        except BaseException:
            self._backplane_users.discard(server)
            if not self._backplane_users and task is self._backplane_task and task.done():
                self._backplane_detach()
            raise

    def _backplane_detach(self) -> None:
        self._backplane_task = None
        self._backplane_loop = None
        self._backplane_users.clear()
        self.topics.on_first_subscriber = None
        self.topics.on_last_subscriber = None

    @property
    def backplane_running(self) -> bool:
        """Whether the backplane was started (or is starting) for the listeners."""
        return self._backplane_task is not None
