"""``RedisClusterBackplane``: sharded pub/sub (``SPUBLISH`` / ``SSUBSCRIBE``) on Redis Cluster.

A topic's channel lives on the shard that owns its hash slot, so publishes and deliveries
spread over the masters instead of every message passing through one server (classic
``PUBLISH`` on a cluster is broadcast to every node).  What redis-py gives and what is
written here:

* redis-py's ``RedisCluster`` keeps the slot map (``CLUSTER SLOTS``, starting from any
  reachable node) and is asked again whenever something moved; ``redis.crc.key_slot`` hashes
  a channel; plain ``redis.asyncio`` clients and ``PubSub`` objects talk to each master.
* Written here: one subscribing connection per master that has channels of this process,
  each read by its own task (redis-py's ``ClusterPubSub.get_sharded_message`` polls the
  shards in turn from one reader, which adds a poll interval of latency per shard and is
  not made for a stream of deliveries); the changes of a loop turn go out as one
  ``SSUBSCRIBE`` per slot (Redis refuses channels of several slots in one command),
  pipelined; and the re-routing: a channel whose shard went away (connection lost: a master
  failed; an unrequested ``sunsubscribe``: its slot moved or its master became a replica; a
  ``MOVED`` answer) is placed again from a fresh slot map, retried with backoff until a
  master serves its slot.  Publishes are grouped by master and pipelined, one round trip
  per master per loop turn, all masters at once.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from .single import RedisBackplane
from .urls import parse_multi_host

__all__ = ["RedisClusterBackplane"]

logger = logging.getLogger("harpia")

#: The longest wait between two attempts to place channels whose master is gone: a failover
#: takes a few seconds and each attempt costs one ``CLUSTER SLOTS``, so keep trying often.
REROUTE_MAX_BACKOFF = 1.0
#: Channels per ``SSUBSCRIBE`` / ``SUNSUBSCRIBE`` command (a slot may hold many topics).
COMMAND_CHUNK = 10000


class _Shard:
    """This process's subscription connection to one master, and the channels it holds there."""

    __slots__ = ("name", "client", "pubsub", "channels", "reader", "received")

    def __init__(self, name: str, client: Any, pubsub: Any) -> None:
        self.name = name
        self.client = client
        self.pubsub = pubsub
        self.channels: dict[bytes, str] = {}
        self.reader: asyncio.Task[None] | None = None
        self.received = 0


class RedisClusterBackplane(RedisBackplane):
    """``harpia(pubsub="redis+cluster://host:port[,host:port...]")``: Redis Cluster (7.0 or
    later), a topic's messages on the shard that owns ``keyslot(channel_prefix + topic)``.

    Any one reachable node of the URL is enough to find the others.  The options are those of
    ``RedisBackplane``; extra keyword arguments go to every node's ``redis.asyncio.Redis``.

    Faults:

    * No node reachable at start: as ``RedisBackplane`` (``BackplaneError`` or, with
      ``retry_at_start=True``, serve locally and keep trying).  Every node lost while serving:
      an outage, as with one server.
    * One master lost (its replica is promoted after ``cluster-node-timeout``): the topics on
      its slots stop reaching other processes; everything else goes on.  The backplane asks
      the cluster for the slot map again, with backoff (``min_backoff`` doubling up to 1 s),
      until a master serves those slots, then resubscribes their channels there.  Publishes
      to those topics in the meantime are delivered locally only (at most once, counted in
      ``stats["dropped"]``).  One ``WARNING`` per lost master, an ``INFO`` line when its
      channels are placed again.
    * A slot resharded while subscribed: Redis ends the subscriptions of that slot's channels
      on the old master (an unrequested ``sunsubscribe``); they are subscribed on the new one
      at once.  A publish that meets ``MOVED`` is sent again once, after the slot map is read
      anew.
    """

    SCHEMES = ("redis+cluster", "rediss+cluster")

    def _check_url(self, url: str) -> None:
        parsed = parse_multi_host(url, self.SCHEMES, 6379, "redis+cluster://host:port[,host:port...]")
        self.startup_nodes = parsed.hosts
        self._node_options: dict[str, Any] = {
            key: value for key, value in
            (("username", parsed.username), ("password", parsed.password)) if value}
        if parsed.scheme.startswith("rediss"):
            self._node_options["ssl"] = True

    def _reset_runtime(self) -> None:
        super()._reset_runtime()
        self._cluster: Any = None
        self._options: dict[str, Any] = {}
        self._clients: dict[str, Any] = {}
        self._shards: dict[str, _Shard] = {}
        # channel -> the shard (node name) it is subscribed on; absent: not subscribed anywhere.
        self._placed: dict[bytes, str] = {}
        self._live = False
        self._reroute: asyncio.Event | None = None
        self._lost: dict[str, float] = {}  # shard name -> when it was lost (for the log)

    def __repr__(self) -> str:
        state = "up" if self._up else ("stopped" if self._loop is None else "down")
        return (f"<RedisClusterBackplane {len(self._shards)} shard(s) {state}, "
                f"{len(self._wanted)} topic(s)>")

    @property
    def shards(self) -> dict[str, int]:
        """Masters this process subscribes on (``host:port``) and how many channels on each."""
        return {name: len(shard.channels) for name, shard in self._shards.items()}

    def slot(self, topic: str) -> int:
        """The cluster hash slot of ``topic``'s channel."""
        from redis.crc import key_slot

        return int(key_slot(self.channel(topic)))

    # ------------------------------------------------------------------ connections

    def _make_clients(self, options: dict[str, Any]) -> None:
        from redis.asyncio.cluster import ClusterNode, RedisCluster

        self._options = {**self._node_options, **options}
        # Only the slot map is asked of this client; commands go through the per-node clients.
        # A node that accepts connections but answers nothing (hung) must not stall the
        # re-routing: its CLUSTER SLOTS times out and the next node is asked.
        self._cluster = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in self.startup_nodes],
            **{"socket_timeout": self.connect_timeout, **self._options})
        self._reroute = asyncio.Event()

    def _client(self, name: str) -> Any:
        """The client of one node (a pool: the subscription and the publishes share it)."""
        client = self._clients.get(name)
        if client is None:
            import redis.asyncio as aioredis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            host, _, port = name.rpartition(":")
            # No retries: a failed command is a shard gone, which the re-routing handles.
            client = self._clients[name] = aioredis.Redis(
                host=host, port=int(port), retry=Retry(NoBackoff(), 0), **self._options)
        return client

    def _master_of(self, channel: bytes) -> str:
        from redis.crc import key_slot

        return str(self._cluster.nodes_manager.get_node_from_slot(key_slot(channel)).name)

    async def _shard(self, name: str) -> _Shard:
        shard = self._shards.get(name)
        if shard is None:
            pubsub = self._client(name).pubsub()
            # Bounded: the connection handshake (CLIENT SETNAME) waits for an answer, and a
            # hung master would otherwise hold the subscription lock forever.
            try:
                await asyncio.wait_for(pubsub.connect(), self.connect_timeout)
            except BaseException:
                await pubsub.aclose()
                raise
            shard = self._shards[name] = _Shard(name, self._client(name), pubsub)
            assert self._loop is not None
            shard.reader = self._loop.create_task(self._read_shard(shard),
                                                  name=f"harpia-backplane-shard-{name}")
        return shard

    async def _session(self) -> None:
        """Read the slot map; subscribe everything wanted; then re-route whatever a shard
        lets go, until no node at all answers (then the supervisor starts over)."""
        assert self._reroute is not None
        try:
            await self._cluster.initialize()
            self._live = True
            self._placed.clear()
            self._dirty = set(self._wanted)
            await self._sync()
            self._mark_up()
            backoff = self.min_backoff
            while True:
                if self._dirty:
                    await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
                    backoff = min(backoff * 2, REROUTE_MAX_BACKOFF)
                else:
                    await self._reroute.wait()
                    backoff = self.min_backoff
                self._reroute.clear()
                await self._cluster.nodes_manager.initialize()  # no node answers: an outage
                await self._sync()
                if not self._dirty:
                    self._report_recovered()
        finally:
            self._live = False
            for shard in list(self._shards.values()):
                await self._drop_shard(shard)
            self._placed.clear()

    def _report_recovered(self) -> None:
        for name, since in self._lost.items():
            logger.info("pubsub backplane: the channels of cluster node %s are subscribed again "
                        "after %.1f s", name, time.monotonic() - since)
        self._lost.clear()

    async def _drop_shard(self, shard: _Shard) -> None:
        if self._shards.get(shard.name) is shard:
            del self._shards[shard.name]
        for channel, topic in shard.channels.items():
            if self._placed.get(channel) == shard.name:
                del self._placed[channel]
            self._dirty.add(topic)
        shard.channels.clear()
        if shard.reader is not None and shard.reader is not asyncio.current_task():
            shard.reader.cancel()
        client = self._clients.pop(shard.name, None)
        try:
            await shard.pubsub.aclose()
            if client is not None:
                await client.aclose()
        except Exception:  # pragma: no cover - closing a broken connection
            pass

    def _shard_lost(self, shard: _Shard, error: BaseException) -> None:
        if self._closing or self._shards.get(shard.name) is not shard:
            return
        if shard.channels and shard.name not in self._lost:
            self._lost[shard.name] = time.monotonic()
            self.stats["outages"] += 1
            logger.warning("pubsub backplane: lost cluster node %s (%s); its %d channel(s) reach "
                           "this process again once a master serves their slots", shard.name,
                           str(error) or type(error).__name__, len(shard.channels))
        assert self._loop is not None
        self._loop.create_task(self._drop_shard(shard))
        self._reroute.set()  # type: ignore[union-attr]

    def _can_sync(self) -> bool:
        return self._live

    async def _close_clients(self) -> None:
        for shard in list(self._shards.values()):
            await self._drop_shard(shard)
        clients = [*self._clients.values(), self._cluster]
        self._clients.clear()
        for client in clients:
            if client is not None:
                try:
                    await client.aclose()
                except Exception:  # pragma: no cover - closing a broken connection
                    pass

    # ------------------------------------------------------------------ subscriptions

    async def _sync(self) -> None:
        """Bring the shard subscriptions in line with the local topics: per master, one
        ``SSUBSCRIBE`` / ``SUNSUBSCRIBE`` per slot, written back to back.  A channel whose
        master cannot be reached stays in ``_dirty`` for the next re-routing."""
        from redis.crc import key_slot

        assert self._sync_lock is not None
        async with self._sync_lock:
            dirty, self._dirty = self._dirty, set()
            add: dict[str, dict[int, list[tuple[bytes, str]]]] = defaultdict(lambda: defaultdict(list))
            remove: dict[str, dict[int, list[bytes]]] = defaultdict(lambda: defaultdict(list))
            unplaced: set[str] = set()
            for topic in dirty:
                channel = self.channel(topic)
                where = self._placed.get(channel)
                if topic in self._wanted:
                    if where is None:
                        try:
                            add[self._master_of(channel)][key_slot(channel)].append((channel, topic))
                        except Exception:  # a slot no master serves (mid-failover)
                            unplaced.add(topic)
                elif where is not None:
                    remove[where][key_slot(channel)].append(channel)
            for name, by_slot in remove.items():
                shard = self._shards.get(name)
                if shard is None:
                    continue
                try:
                    for channels in by_slot.values():
                        for channel in channels:
                            shard.channels.pop(channel, None)
                            self._placed.pop(channel, None)
                        for i in range(0, len(channels), COMMAND_CHUNK):
                            await shard.pubsub.sunsubscribe(*channels[i:i + COMMAND_CHUNK])
                except Exception as exc:
                    self._shard_lost(shard, exc)
            for name, slots in add.items():
                try:
                    shard = await self._shard(name)
                except Exception as exc:
                    logger.debug("pubsub backplane: cannot subscribe on cluster node %s: %s", name, exc)
                    unplaced.update(topic for pairs in slots.values() for _, topic in pairs)
                    continue
                try:
                    for pairs in slots.values():
                        for channel, topic in pairs:
                            shard.channels[channel] = topic
                            self._placed[channel] = name
                        for i in range(0, len(pairs), COMMAND_CHUNK):
                            await shard.pubsub.ssubscribe(*(c for c, _ in pairs[i:i + COMMAND_CHUNK]))
                except Exception as exc:
                    self._shard_lost(shard, exc)
            # Not placed now: retried by the session's re-routing (with a fresh slot map).
            self._dirty |= unplaced
            if unplaced:
                self._reroute.set()  # type: ignore[union-attr]

    async def _read_shard(self, shard: _Shard) -> None:
        from redis.exceptions import MovedError, ResponseError

        pubsub = shard.pubsub
        read = pubsub.parse_response
        on_message = self._on_message
        while not self._closing:
            try:
                response = await read(block=True)
            except MovedError as exc:
                # An SSUBSCRIBE reached a node that does not own the slot (any more).
                self._unplace(shard, lambda channel: self._slot_of(channel) == exc.slot_id)
                continue
            except ResponseError as exc:
                logger.warning("pubsub backplane: cluster node %s refused a command: %s", shard.name, exc)
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._shard_lost(shard, exc)
                return
            shard.received += 1
            self._received_count += 1
            if isinstance(response, list) and len(response) == 3 and response[0] == b"smessage":
                on_message(response[1], response[2])
            elif isinstance(response, list) and response and response[0] == b"sunsubscribe":
                channel = response[1]
                if channel in shard.channels:
                    # Not asked for: the slot moved elsewhere, or this master became a replica.
                    self._unplace(shard, lambda c: c == channel)
                await pubsub.handle_message(response)
            elif response is not None:
                await pubsub.handle_message(response)

    @staticmethod
    def _slot_of(channel: bytes) -> int:
        from redis.crc import key_slot

        return int(key_slot(channel))

    def _unplace(self, shard: _Shard, which: Callable[[bytes], bool]) -> None:
        """Forget where the matching channels are subscribed and place them again."""
        for channel in [c for c in shard.channels if which(c)]:
            topic = shard.channels.pop(channel)
            if self._placed.get(channel) == shard.name:
                del self._placed[channel]
            self._dirty.add(topic)
        self._reroute.set()  # type: ignore[union-attr]

    # ------------------------------------------------------------------ publishing

    async def _send(self, batch: list[tuple[str, bytearray]]) -> None:
        """SPUBLISH the envelopes of one loop turn: one pipeline per master, all at once; the
        envelopes that met ``MOVED`` once more, after a fresh slot map."""
        moved = await self._send_by_master(batch)
        if moved:
            try:
                await self._cluster.nodes_manager.initialize()
            except Exception:
                self.stats["dropped"] += len(moved)
                return
            await self._send_by_master(moved, final=True)

    async def _send_by_master(self, batch: list[tuple[str, bytearray]],
                              final: bool = False) -> list[tuple[str, bytearray]]:
        from redis.exceptions import AskError, MovedError

        by_master: dict[str, list[tuple[str, bytearray]]] = defaultdict(list)
        for item in batch:
            try:
                by_master[self._master_of(self.channel(item[0]))].append(item)
            except Exception:
                self.stats["dropped"] += 1
        names = list(by_master)
        # Bounded, so that a hung master holds up the writer for a while, not for good.
        limit = self.connect_timeout + self.ping_interval
        results = await asyncio.gather(
            *(asyncio.wait_for(self._publish_on(name, by_master[name]), limit) for name in names),
            return_exceptions=True)
        moved: list[tuple[str, bytearray]] = []
        for name, result in zip(names, results):
            items = by_master[name]
            if isinstance(result, BaseException):
                # The master is gone (or going): these may or may not have been published.
                self.stats["dropped"] += len(items)
                logger.debug("pubsub backplane: SPUBLISH on %s failed: %s", name, result)
                self._reroute.set()  # type: ignore[union-attr]
                continue
            for item, reply in zip(items, result):
                if isinstance(reply, (MovedError, AskError)) and not final:
                    moved.append(item)
                elif isinstance(reply, Exception):
                    self.stats["dropped"] += 1
                else:
                    self.stats["published"] += 1
        return moved

    async def _publish_on(self, name: str, items: list[tuple[str, bytearray]]) -> list[Any]:
        pipe = self._client(name).pipeline(transaction=False)
        for topic, envelope in items:
            pipe.execute_command("SPUBLISH", self.channel(topic), envelope)
        return list(await pipe.execute(raise_on_error=False))

    async def _watchdog(self) -> None:
        """PING every shard connection now and then; one that answered nothing at all within
        an interval is dead without having said so: drop it and re-route its channels."""
        seen: dict[str, int] = {}
        while not self._closing:
            await asyncio.sleep(self.ping_interval)
            for shard in list(self._shards.values()):
                if seen.get(shard.name) == shard.received:
                    self._shard_lost(shard, ConnectionError("no answer to PING"))
                    seen.pop(shard.name, None)
                    continue
                seen[shard.name] = shard.received
                try:
                    await shard.pubsub.ping()
                except Exception as exc:
                    self._shard_lost(shard, exc)
