"""``RedisBackplane``: publish through one Redis server's pub/sub (and the machinery the
cluster and sentinel variants reuse: the outbox of envelopes, reconnecting, the watchdog)."""
from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from ..errors import BackplaneError, ConfigurationError
from ..log_throttle import LogThrottle
from .envelope import _BINARY, _RECORD, _TEXT, ENVELOPE_LIMIT, MAGIC, ORIGIN_BYTES, frames_of
from .protocol import Deliver

__all__ = ["RedisBackplane"]

logger = logging.getLogger("harpia")


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    userinfo, at, hosts = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    return f"{scheme}://{userinfo.partition(':')[0]}:***@{hosts}"


class RedisBackplane:
    """Publish through Redis pub/sub (``redis.asyncio`` with hiredis), one channel per topic.

    ``RedisBackplane("redis://host:6379/0", channel_prefix="harpia:")``, or simply
    ``harpia(pubsub="redis://host:6379/0")``.  (Redis pub/sub ignores the database number:
    apps that share a Redis but must not see each other's topics use different prefixes.)

    Faults:

    * Redis unreachable when the first listener starts: ``listen()`` / ``serve()`` raise
      ``BackplaneError`` (also logged) after ``connect_timeout`` at most
      (``retry_at_start=False``, the default), or, with ``retry_at_start=True``, serve at
      once with local delivery only and keep connecting in the background, as after an
      outage.  ``connect_timeout`` bounds the whole handshake, so a host that accepts the
      TCP connection and then answers nothing (a stopped Redis, a wrong port) counts as
      unreachable, at start and when reconnecting.
    * Redis lost while serving: local delivery goes on; messages published meanwhile reach
      this process's subscribers only (pub/sub keeps nothing for absent subscribers, and
      harpia does not buffer them); the backplane reconnects with exponential backoff
      (``min_backoff`` doubling up to ``max_backoff``, with jitter), resubscribes every
      channel still needed in one command, and logs the outage once (a warning when it is
      lost, another when it is back).  A dead connection that gives no error (a vanished
      host) is noticed by a PING every ``ping_interval`` seconds.
    * More queued for Redis than ``max_pending`` bytes (Redis slower than the publishers):
      further messages are not forwarded (local delivery continues), with a warning at most
      every 10 s, until the queue drains.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        channel_prefix: str = "harpia:",
        retry_at_start: bool = False,
        connect_timeout: float = 5.0,
        min_backoff: float = 0.05,
        max_backoff: float = 5.0,
        ping_interval: float = 5.0,
        max_pending: int = 32 * 1024 * 1024,
        **redis_options: Any,
    ) -> None:
        self._check_url(url)
        for name, value in (("connect_timeout", connect_timeout), ("min_backoff", min_backoff),
                            ("max_backoff", max_backoff), ("ping_interval", ping_interval)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigurationError(f"{name} must be a positive number of seconds")
        try:
            import redis.asyncio  # noqa: F401
        except ImportError as exc:  # pragma: no cover - redis is in harpia[redis]
            raise ImportError(
                "pubsub='redis://...' needs the Redis client: pip install 'harpia[redis]'") from exc
        self.url = url
        self.channel_prefix = channel_prefix
        self.retry_at_start = retry_at_start
        self.connect_timeout = float(connect_timeout)
        self.min_backoff = float(min_backoff)
        self.max_backoff = max(float(max_backoff), self.min_backoff)
        self.ping_interval = float(ping_interval)
        self.max_pending = int(max_pending)
        self.redis_options = redis_options
        #: Counters: envelopes sent to Redis (one per topic per loop turn), messages and
        #: envelopes received from other processes, messages not forwarded (broker down,
        #: queue full; an envelope whose PUBLISH failed counts once), outages.
        self.stats = {"published": 0, "received": 0, "dropped": 0, "outages": 0}
        # Topics with local subscribers (kept before start too), and those changed since the
        # last SUBSCRIBE/UNSUBSCRIBE; channels subscribed on the current connection.
        self._wanted: set[str] = set()
        self._dirty: set[str] = set()
        self._subscribed: set[bytes] = set()
        self._topic_of: dict[bytes, str] = {}
        self._reset_runtime()

    #: URL schemes this class serves (``make_backplane`` picks the class by scheme).
    SCHEMES: tuple[str, ...] = ("redis", "rediss", "unix")

    def _check_url(self, url: str) -> None:
        scheme = urlsplit(url).scheme if isinstance(url, str) else ""
        if scheme not in self.SCHEMES:
            raise ConfigurationError(
                f"pubsub URL must start with redis://, rediss:// or unix://, got {url!r}")

    def _reset_runtime(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._origin = b""
        self._header = b""
        self._deliver: Deliver | None = None
        self._pub_client: Any = None
        self._sub_client: Any = None
        self._pubsub: Any = None
        self._up = False
        self._down_since: float | None = None
        self._first_attempt: asyncio.Future[BaseException | None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._session_task: asyncio.Task[None] | None = None
        self._wake_writer: asyncio.Event | None = None
        self._wake_sync: asyncio.Event | None = None
        self._sync_lock: asyncio.Lock | None = None
        self._writer_idle: asyncio.Event | None = None
        self._outbox: list[tuple[str, bytearray]] = []
        self._open: dict[str, bytearray] = {}
        self._pending = 0
        self._received_count = 0
        self._drop_log = LogThrottle()

    def __repr__(self) -> str:
        state = "up" if self._up else ("stopped" if self._loop is None else "down")
        return f"<RedisBackplane {self.where} {state}, {len(self._wanted)} topic(s)>"

    # ------------------------------------------------------------------ public state

    @property
    def where(self) -> str:
        """The URL without its password, for logs and errors."""
        return _redact(self.url)

    @property
    def connected(self) -> bool:
        """True while Redis is reachable (subscriptions in place, publishes forwarded)."""
        return self._up

    def channel(self, topic: str) -> bytes:
        """The Redis channel of ``topic``."""
        return (self.channel_prefix + topic).encode("utf-8", "surrogatepass")

    # ------------------------------------------------------------------ lifecycle

    async def start(self, deliver: Deliver, topics: Iterable[str] = ()) -> None:
        if self._loop is not None:
            raise RuntimeError("this backplane is already started")
        loop = self._loop = asyncio.get_running_loop()
        # A fresh id per start: worker processes forked from one parent must differ.
        self._origin = os.urandom(ORIGIN_BYTES)
        self._header = MAGIC + self._origin
        self._deliver = deliver
        for topic in topics:
            self._wanted.add(topic)
        self._dirty = set(self._wanted)
        self._make_clients({
            "socket_connect_timeout": self.connect_timeout,
            "socket_keepalive": True,
            "client_name": f"harpia-{os.getpid()}",
            **self.redis_options,
        })
        self._wake_writer = asyncio.Event()
        self._wake_sync = asyncio.Event()
        self._writer_idle = asyncio.Event()
        self._writer_idle.set()
        self._sync_lock = asyncio.Lock()
        self._first_attempt = loop.create_future()
        self._tasks = [
            loop.create_task(self._supervise(), name="harpia-backplane-supervisor"),
            loop.create_task(self._write_loop(), name="harpia-backplane-writer"),
            loop.create_task(self._sync_loop(), name="harpia-backplane-sync"),
            loop.create_task(self._watchdog(), name="harpia-backplane-watchdog"),
        ]
        try:
            error = await self._first_attempt
        except BaseException:
            await self._shutdown()
            raise
        if error is not None:
            if not self.retry_at_start:
                await self._shutdown()
                logger.error("pubsub backplane: cannot reach Redis at %s: %s", self.where, error)
                raise BackplaneError(f"cannot reach Redis at {self.where}: {error}") from error
            logger.warning("pubsub backplane: cannot reach Redis at %s (%s); serving with "
                           "local delivery only and retrying in the background", self.where, error)

    def _make_clients(self, options: dict[str, Any]) -> None:
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # The publishing connection retries a command once (a stale pooled connection after an
        # outage reconnects transparently); the subscribing one never: its failures are ours.
        self._pub_client = aioredis.Redis.from_url(
            self.url, retry=Retry(NoBackoff(), 1), **options)
        self._sub_client = aioredis.Redis.from_url(
            self.url, retry=Retry(NoBackoff(), 0), **options)

    async def stop(self) -> None:
        if self._loop is None:
            return
        # Give what is queued a moment to reach Redis (close handlers may have published).
        if self._up and self._writer_idle is not None and (self._outbox or not self._writer_idle.is_set()):
            try:
                await asyncio.wait_for(self._writer_idle.wait(), 1.0)
            except asyncio.TimeoutError:
                pass
        await self._shutdown()

    async def _shutdown(self) -> None:
        self._closing = True
        for event in (self._wake_writer, self._wake_sync):
            if event is not None:
                event.set()
        pending = {task for task in self._tasks if not task.done()}
        if self._session_task is not None and not self._session_task.done():
            pending.add(self._session_task)
        # Cancel until they are done: asyncio.wait_for in Python 3.11 (used inside redis-py)
        # can swallow a cancellation that lands just as what it waits for completes.
        deadline = time.monotonic() + 2.0
        while pending and time.monotonic() < deadline:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.1)
        if pending:  # pragma: no cover - a task that refuses to end
            logger.debug("pubsub backplane: %d task(s) did not end", len(pending))
        await self._close_clients()
        self._subscribed.clear()
        self._topic_of.clear()
        self._wanted.clear()  # the next start() is told the local topics afresh
        self._dirty.clear()
        self._reset_runtime()

    async def _close_clients(self) -> None:
        for client in (self._pub_client, self._sub_client):
            if client is not None:
                try:
                    await client.aclose()
                except Exception:  # pragma: no cover - closing a broken connection
                    pass

    # ------------------------------------------------------------------ the app's calls

    def subscribe(self, topic: str) -> None:
        self._wanted.add(topic)
        self._dirty.add(topic)
        if self._wake_sync is not None:
            self._wake_sync.set()

    def unsubscribe(self, topic: str) -> None:
        self._wanted.discard(topic)
        self._dirty.add(topic)
        if self._wake_sync is not None:
            self._wake_sync.set()

    def publish(self, topic: str, message: str | bytes | bytearray | memoryview) -> None:
        if not self._up or self._pending > self.max_pending:
            self._drop()
            return
        data: bytes
        if isinstance(message, str):
            data = message.encode()
            opcode = _TEXT
        else:
            data = message if isinstance(message, bytes) else bytes(message)
            opcode = _BINARY
        envelope = self._open.get(topic)
        if envelope is None:
            envelope = self._open[topic] = bytearray(self._header)
            if not self._outbox:
                self._wake_writer.set()  # type: ignore[union-attr]
            self._outbox.append((topic, envelope))
        size = len(data)
        envelope += _RECORD.pack(opcode, size)
        envelope += data
        self._pending += size + 5
        if len(envelope) >= ENVELOPE_LIMIT:
            del self._open[topic]

    def _drop(self) -> None:
        self.stats["dropped"] += 1
        if not self._up:
            return  # the outage itself was logged
        self._drop_log.warn("pubsub backplane: over %d bytes queued for Redis; a message was "
                            "delivered locally only", self.max_pending)

    # ------------------------------------------------------------------ connection

    async def _supervise(self) -> None:
        """Keep one subscribing session alive: connect, resubscribe, read; on a fault wait
        (exponential backoff with jitter) and start over."""
        backoff = self.min_backoff
        loop = asyncio.get_running_loop()
        while not self._closing:
            session = self._session_task = loop.create_task(self._session())
            try:
                await asyncio.wait((session,))
            finally:
                if not session.done():
                    session.cancel()
            if self._closing:
                return
            error: BaseException | None
            if session.cancelled():
                error = ConnectionError("connection found dead")
            else:
                error = session.exception()
                if error is None:  # pragma: no cover - a session only ends on an error
                    error = ConnectionError("session ended")
            was_up = self._up
            self._mark_down(error)
            if self._first_attempt is not None and not self._first_attempt.done():
                self._first_attempt.set_result(error)
            if was_up:
                backoff = self.min_backoff
            delay = backoff * random.uniform(0.5, 1.0)
            backoff = min(backoff * 2, self.max_backoff)
            await asyncio.sleep(delay)

    async def _session(self) -> None:
        pubsub = self._sub_client.pubsub()
        try:
            await self._connect(pubsub)
            self._pubsub = pubsub
            self._subscribed.clear()
            self._topic_of.clear()
            self._dirty = set(self._wanted)
            await self._sync()
            self._mark_up()
            await self._read(pubsub)
        finally:
            self._pubsub = None
            try:
                await pubsub.aclose()
            except Exception:  # pragma: no cover - the connection is already broken
                pass

    async def _connect(self, pubsub: Any) -> None:
        """Open the subscribing connection and check the publishing one, within
        ``connect_timeout`` in all: the socket's own timeout bounds the TCP connect only, and
        a host that accepts and then answers nothing (a stopped Redis, a wrong port, a
        sentinel that hangs) would otherwise hold the handshake, and ``start()``, forever."""
        async def connect() -> None:
            await pubsub.connect()
            # Publishing connections from before an outage are dead: start them afresh.
            await self._pub_client.connection_pool.disconnect()
            await self._pub_client.ping()

        try:
            await asyncio.wait_for(connect(), self.connect_timeout)
        except asyncio.TimeoutError:
            raise BackplaneError(
                f"no answer within connect_timeout ({self.connect_timeout:g} s): a host "
                "accepted the connection but did not complete the handshake") from None

    async def _read(self, pubsub: Any) -> None:
        read = pubsub.parse_response
        on_message = self._on_message
        while not self._closing:
            response = await read(block=True)
            self._received_count += 1
            if isinstance(response, list) and len(response) == 3 and response[0] == b"message":
                on_message(response[1], response[2])
            elif response is not None:
                # Subscribe / unsubscribe confirmations and pongs: let redis-py keep its books.
                await pubsub.handle_message(response)

    def _on_message(self, channel: bytes, data: bytes) -> None:
        if data.startswith(self._header):
            return  # our own publish: delivered locally already
        try:
            frames = frames_of(data)
        except ValueError as exc:
            logger.warning("pubsub backplane: dropped a malformed message on %r: %s", channel, exc)
            return
        topic = self._topic_of.get(channel)
        if topic is None:
            topic = channel[len(self.channel_prefix.encode()):].decode("utf-8", "surrogatepass")
        self.stats["received"] += 1
        try:
            self._deliver(topic, frames)  # type: ignore[misc]
        except Exception:  # pragma: no cover - the registry does not raise
            logger.exception("pubsub backplane: delivering a message on %r failed", topic)

    def _mark_up(self) -> None:
        self._up = True
        if self._down_since is not None:
            logger.info("pubsub backplane: Redis at %s is back after %.1f s; resubscribed "
                           "%d channel(s)", self.where, time.monotonic() - self._down_since,
                           len(self._subscribed))
            self._down_since = None
        if self._first_attempt is not None and not self._first_attempt.done():
            self._first_attempt.set_result(None)

    def _mark_down(self, error: BaseException) -> None:
        starting = self._first_attempt is not None and not self._first_attempt.done()
        if self._up:
            # The one report of an outage (plus one line when it is over).
            self.stats["outages"] += 1
            self._down_since = time.monotonic()
            logger.warning("pubsub backplane: lost Redis at %s (%s); delivering locally only "
                           "and reconnecting", self.where, str(error) or type(error).__name__)
        elif starting:
            if self.retry_at_start:  # start() reports it; the recovery is logged later
                self._down_since = time.monotonic()
        else:
            logger.debug("pubsub backplane: Redis at %s still unreachable: %s", self.where, error)
        self._up = False
        self._outbox.clear()
        self._open.clear()
        self._pending = 0

    def _kick(self) -> None:
        """The connection looks dead: end the session; the supervisor reconnects."""
        if self._session_task is not None and not self._session_task.done():
            self._session_task.cancel()

    # ------------------------------------------------------------------ subscriptions

    async def _sync_loop(self) -> None:
        wake = self._wake_sync
        assert wake is not None
        while not self._closing:
            await wake.wait()
            wake.clear()
            if not self._can_sync() or self._closing:
                continue  # the next session subscribes to everything wanted
            try:
                await self._sync()
            except Exception as exc:
                logger.debug("pubsub backplane: SUBSCRIBE/UNSUBSCRIBE failed: %s", exc)
                self._kick()

    def _can_sync(self) -> bool:
        return self._pubsub is not None

    async def _sync(self) -> None:
        """Bring the channels of the connection in line with the local topics: everything
        changed since the last call goes out as one SUBSCRIBE and one UNSUBSCRIBE."""
        assert self._sync_lock is not None
        async with self._sync_lock:
            while self._dirty and self._pubsub is not None:
                pubsub = self._pubsub
                dirty, self._dirty = self._dirty, set()
                add: list[tuple[bytes, str]] = []
                remove: list[bytes] = []
                for topic in dirty:
                    channel = self.channel(topic)
                    if topic in self._wanted:
                        if channel not in self._subscribed:
                            add.append((channel, topic))
                    elif channel in self._subscribed:
                        remove.append(channel)
                for i in range(0, len(add), 10000):
                    chunk = add[i:i + 10000]
                    for channel, topic in chunk:
                        self._subscribed.add(channel)
                        self._topic_of[channel] = topic
                    await pubsub.subscribe(*(channel for channel, _ in chunk))
                for i in range(0, len(remove), 10000):
                    chunk_names = remove[i:i + 10000]
                    for channel in chunk_names:
                        self._subscribed.discard(channel)
                        self._topic_of.pop(channel, None)
                    await pubsub.unsubscribe(*chunk_names)

    # ------------------------------------------------------------------ publishing

    async def _write_loop(self) -> None:
        wake = self._wake_writer
        idle = self._writer_idle
        assert wake is not None and idle is not None
        while not self._closing:
            await wake.wait()
            wake.clear()
            batch = self._outbox
            if not batch or self._closing:
                continue
            idle.clear()
            self._outbox = []
            self._open = {}
            self._pending = 0
            try:
                await self._send(batch)
            finally:
                if not self._outbox:
                    idle.set()

    async def _send(self, batch: list[tuple[str, bytearray]]) -> None:
        """PUBLISH the envelopes of one loop turn in one pipelined round trip."""
        try:
            if len(batch) == 1:
                topic, envelope = batch[0]
                await self._pub_client.publish(self.channel(topic), envelope)
            else:
                pipe = self._pub_client.pipeline(transaction=False)
                for topic, envelope in batch:
                    pipe.publish(self.channel(topic), envelope)
                await pipe.execute()
            self.stats["published"] += len(batch)
        except Exception as exc:
            self.stats["dropped"] += len(batch)
            if self._up:
                logger.debug("pubsub backplane: PUBLISH failed: %s", exc)
                self._kick()

    async def _watchdog(self) -> None:
        """PING the subscribing connection now and then; if nothing at all came back within
        an interval, the connection is dead without having said so: reconnect."""
        seen = -1
        while not self._closing:
            await asyncio.sleep(self.ping_interval)
            pubsub = self._pubsub
            if pubsub is None or not self._up:
                seen = -1
                continue
            if seen == self._received_count:
                logger.debug("pubsub backplane: no answer to PING within %.1f s", self.ping_interval)
                self._kick()
                seen = -1
                continue
            seen = self._received_count
            try:
                await pubsub.ping()
            except Exception:
                self._kick()
