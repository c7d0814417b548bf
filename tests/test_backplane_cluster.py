"""The cluster backplane against a real Redis Cluster (3 masters, 3 replicas, started here):
sharded pub/sub across processes exactly once, topics on every shard, a master killed and
its replica promoted, a slot resharded under live subscriptions.

One cluster serves the whole module (it takes a few seconds to form); the tests that kill a
master bring it back as a replica before they end, and every test looks up the current
owner of a slot instead of assuming one.
"""
from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from redis.crc import key_slot
from redis_cluster import RedisCluster, RedisNode, cluster  # noqa: F401 - a fixture
from test_backplane import ServerProcess, close_all, command, eventually, expect, make_app, open_clients
from test_backplane import fast_backplane, server_processes
from wsclient import RawClient

from harpia import ConfigurationError, RedisClusterBackplane, harpia
from harpia.backplane import make_backplane


def backplane(url: str, **options: Any) -> RedisClusterBackplane:
    options.setdefault("ping_interval", 1.0)
    return fast_backplane(RedisClusterBackplane, url, **options)


def topics_on_every_master(cluster: RedisCluster, per_master: int = 2) -> dict[int, list[str]]:
    """Topic names whose channels (``harpia:`` + name) hash to each master: port -> topics."""
    found: dict[int, list[str]] = {node.port: [] for node in cluster.masters()}
    i = 0
    while any(len(names) < per_master for names in found.values()):
        name = f"topic{i}"
        owner = cluster.slot_owner(key_slot(f"harpia:{name}".encode())).port
        if len(found[owner]) < per_master:
            found[owner].append(name)
        i += 1
    return found


def owner_of(cluster: RedisCluster, topic: str) -> RedisNode:
    return cluster.slot_owner(key_slot(f"harpia:{topic}".encode()))


def shard_subscribers(cluster: RedisCluster, topic: str) -> int:
    return cluster.shard_numsub(owner_of(cluster, topic), f"harpia:{topic}")


# ---------------------------------------------------------------- configuration


def test_cluster_urls() -> None:
    bp = make_backplane("redis+cluster://127.0.0.1:7000,127.0.0.1:7001")
    assert isinstance(bp, RedisClusterBackplane)
    assert bp.startup_nodes == [("127.0.0.1", 7000), ("127.0.0.1", 7001)]
    assert RedisClusterBackplane("redis+cluster://:pw@[::1]:7000,h")._node_options == {"password": "pw"}
    assert RedisClusterBackplane("redis+cluster://[::1]:7000,h").startup_nodes == [("::1", 7000), ("h", 6379)]
    # The password stays out of logs and errors.
    assert RedisClusterBackplane("redis+cluster://:secret@h:1").where == "redis+cluster://:***@h:1"
    for bad in ("redis+cluster://", "redis+cluster://h:port", "redis+cluster://h:70000", "cluster://h:1"):
        with pytest.raises(ConfigurationError):
            RedisClusterBackplane(bad)


# ---------------------------------------------------------------- steady state


@pytest.mark.timeout(120)
async def test_processes_deliver_exactly_once_on_every_shard(cluster: RedisCluster, tmp_path: Path) -> None:
    by_master = topics_on_every_master(cluster)
    topics = [name for names in by_master.values() for name in names]
    with server_processes(cluster.url, tmp_path) as servers:
        await deliver_on_every_shard(cluster, servers, topics, by_master)


async def deliver_on_every_shard(cluster: RedisCluster, servers: list[ServerProcess],
                                 topics: list[str], by_master: dict[int, list[str]]) -> None:
    clients: list[RawClient] = []
    try:
        port_a, port_b = await asyncio.gather(*(s.ready() for s in servers))
        a1, a2 = await open_clients(port_a, 2)
        b1, b2 = await open_clients(port_b, 2)
        clients = [a1, a2, b1, b2]
        for client in clients:
            await command(client, "sub " + " ".join(topics))
        # Each topic's channel is subscribed on its own shard, once per process.
        await eventually(lambda: all(cluster.shard_numsub(cluster.node(port), f"harpia:{t}") == 2
                                     for port, names in by_master.items() for t in names),
                         timeout=15, what="both processes subscribed on all three shards")

        for topic in topics:
            await a1.send_text(f"pub {topic} from-a-{topic}")
            await b1.send_text(f"wspub {topic} from-b-{topic}")
        # Every subscriber gets each publish once (ws.publish skips its sender, b1).
        from_a = [f"from-a-{t}" for t in topics]
        from_b = [f"from-b-{t}" for t in topics]
        for client in clients:
            wanted = from_a + ([] if client is b1 else from_b)
            got = [await client.recv_message() for _ in wanted]
            assert Counter(got) == Counter(wanted)
        # A burst on one topic arrives in order, each message once, on both processes.
        await a2.send_text(f"burst {topics[0]} 300")
        burst = [f"{topics[0]}-{i}" for i in range(300)]
        for client in clients:
            await expect(client, *burst)
        await asyncio.gather(*(expect(c, quiet=0.3) for c in clients))

        # Unsubscribing everywhere leaves no shard subscription behind.
        for client in clients:
            await command(client, "unsub " + " ".join(topics))
        await eventually(lambda: all(shard_subscribers(cluster, t) == 0 for t in topics),
                         timeout=15, what="no shard subscription left")
    finally:
        close_all(clients)


async def test_subscriptions_are_batched_per_slot(cluster: RedisCluster) -> None:
    app = make_app(backplane(cluster.url))
    # 200 topics in 6 slots (a {hash tag} picks the slot), over the shards that own them.
    many = [f"{{room{i % 6}}}bulk{i}" for i in range(200)]
    slots = {key_slot(f"harpia:{t}".encode()) for t in many}
    assert len(slots) == 6
    owners = {cluster.slot_owner(slot).port for slot in slots}

    def ssubscribe_calls() -> int:
        total = 0
        for node in cluster.masters():
            info = node.command("INFO", "commandstats")
            assert isinstance(info, dict)
            total += int(info.get("cmdstat_ssubscribe", {}).get("calls", 0))
        return total

    async with app.serve() as listener:
        (client,) = await open_clients(listener.port, 1)
        try:
            before = await asyncio.to_thread(ssubscribe_calls)
            await command(client, "sub " + " ".join(many))
            await eventually(lambda: all(shard_subscribers(cluster, t) == 1 for t in many),
                             timeout=15, what="200 topics subscribed")
            # One loop turn's first subscribers: one SSUBSCRIBE per slot, not per topic.
            assert await asyncio.to_thread(ssubscribe_calls) == before + len(slots)
            assert app.hub.backplane is not None
            shards = app.hub.backplane.shards  # type: ignore[attr-defined]
            assert {int(name.rpartition(":")[2]) for name in shards} == owners
            assert sum(shards.values()) == 200
        finally:
            client.close()
    await eventually(lambda: all(shard_subscribers(cluster, t) == 0 for t in many),
                     timeout=15, what="unsubscribed when the app stopped")


# ---------------------------------------------------------------- faults


async def publish_until_received(sender: RawClient, receiver: RawClient, topic: str,
                                 timeout: float = 30.0) -> list[int]:
    """Publish ``probe-<n>`` on ``topic`` every 50 ms until ``receiver`` gets one; returns
    the probe numbers it got."""
    got: list[int] = []
    n = 0
    deadline = time.monotonic() + timeout
    while not got:
        assert time.monotonic() < deadline, f"no delivery on {topic} within {timeout} s"
        await sender.send_text(f"pub {topic} probe-{n}")
        n += 1
        try:
            message = await receiver.recv_message(timeout=0.05)
        except asyncio.TimeoutError:
            continue
        assert isinstance(message, str) and message.startswith("probe-"), message
        got.append(int(message[6:]))
    return got


async def expect_after_failover(a1: RawClient, b1: RawClient, topic: str, got: list[int],
                                count: int) -> None:
    """A burst of ``count`` on ``topic`` from ``a1``'s process, ``b1`` on the other having
    received the probes ``got`` so far: local delivery never stopped, the other process
    missed some (at most once) and received none twice, and from the burst on both get
    every message exactly once, in order."""
    await a1.send_text(f"burst {topic} {count}")
    burst = [f"{topic}-{i}" for i in range(count)]
    local = await drain_probes(a1, burst[0])
    remote = got + await drain_probes(b1, burst[0])
    assert local == list(range(len(local)))
    assert remote == sorted(set(remote)) and set(remote) <= set(local)
    for client in (a1, b1):
        await expect(client, *burst[1:])
    await asyncio.gather(*(expect(c, quiet=0.3) for c in (a1, b1)))


async def drain_probes(client: RawClient, first: str) -> list[int]:
    """Read until ``first``; everything before it must be a probe."""
    probes = []
    while True:
        message = await client.recv_message()
        if message == first:
            return probes
        assert isinstance(message, str) and message.startswith("probe-"), message
        probes.append(int(message[6:]))


@pytest.mark.timeout(120)
async def test_master_killed_replica_promoted_deliveries_resume(cluster: RedisCluster,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    by_master = topics_on_every_master(cluster, per_master=1)
    topics = [names[0] for names in by_master.values()]
    bps = [backplane(cluster.url), backplane(cluster.url)]
    app_a, app_b = make_app(bps[0]), make_app(bps[1])
    victim_topic, *other_topics = topics
    async with app_a.serve() as la, app_b.serve() as lb:
        (a1,) = await open_clients(la.port, 1)
        (b1,) = await open_clients(lb.port, 1)
        try:
            for client in (a1, b1):
                await command(client, "sub " + " ".join(topics))
            await eventually(lambda: all(shard_subscribers(cluster, t) == 2 for t in topics),
                             timeout=15, what="subscribed on every shard")

            old = cluster.kill_master_of(key_slot(f"harpia:{victim_topic}".encode()))
            # Topics on the other shards are not affected meanwhile.
            for topic in other_topics:
                await a1.send_text(f"pub {topic} still-{topic}")
                await expect(a1, f"still-{topic}")
                await expect(b1, f"still-{topic}")
            new = await asyncio.to_thread(cluster.wait_promoted,
                                          key_slot(f"harpia:{victim_topic}".encode()), old)
            assert new is not old

            # Deliveries on the failed shard's topic resume without restarting anything; the
            # subscriptions held across the failover were made again on the promoted replica.
            got = await publish_until_received(a1, b1, victim_topic)
            await eventually(lambda: cluster.shard_numsub(new, f"harpia:{victim_topic}") == 2,
                             timeout=15, what="both processes resubscribed on the new master")
            await expect_after_failover(a1, b1, victim_topic, got, 50)
            for bp in bps:
                assert bp.connected
                assert bp.stats["outages"] >= 1
            assert any("lost cluster node" in r.getMessage() for r in caplog.records)
        finally:
            close_all((a1, b1))
            await asyncio.to_thread(cluster.restart, old)


async def test_reshard_moves_live_subscriptions(cluster: RedisCluster) -> None:
    by_master = topics_on_every_master(cluster, per_master=1)
    topic = next(iter(by_master.values()))[0]
    slot = key_slot(f"harpia:{topic}".encode())
    bps = [backplane(cluster.url), backplane(cluster.url)]
    app_a, app_b = make_app(bps[0]), make_app(bps[1])
    async with app_a.serve() as la, app_b.serve() as lb:
        (a1,) = await open_clients(la.port, 1)
        (b1,) = await open_clients(lb.port, 1)
        try:
            for client in (a1, b1):
                await command(client, f"sub {topic}")
            source = owner_of(cluster, topic)
            await eventually(lambda: cluster.shard_numsub(source, f"harpia:{topic}") == 2,
                             timeout=15, what="subscribed")
            target = next(node for node in cluster.masters() if node is not source)
            await asyncio.to_thread(cluster.move_slot, slot, target)
            # The old master ended the subscriptions of the moved slot; both processes made
            # them again on the new owner, without losing one.
            await eventually(lambda: cluster.shard_numsub(target, f"harpia:{topic}") == 2,
                             timeout=15, what="subscriptions moved with the slot")
            assert cluster.shard_numsub(source, f"harpia:{topic}") == 0
            await a1.send_text(f"burst {topic} 20")
            burst = [f"{topic}-{i}" for i in range(20)]
            for client in (a1, b1):
                await expect(client, *burst)
            # Publishing from the process whose slot map is stale: MOVED, map read again.
            await b1.send_text(f"wspub {topic} after-move")
            await expect(a1, "after-move")
        finally:
            close_all((a1, b1))


async def test_no_node_reachable_at_start_is_a_clear_error() -> None:
    from redis_server import free_port

    from harpia import BackplaneError

    app = harpia(pubsub=backplane(f"redis+cluster://127.0.0.1:{free_port()}", connect_timeout=1.0))
    app.ws("/", {})
    with pytest.raises(BackplaneError, match="cannot reach Redis"):
        async with app.serve():
            pass


@pytest.mark.timeout(120)
async def test_a_master_that_hangs_is_noticed_by_ping(cluster: RedisCluster) -> None:
    """SIGSTOP: the master's sockets stay open and nothing answers; the cluster fails it
    over, and only the PING watchdog can tell the subscribing connection is dead."""
    topic = topics_on_every_master(cluster, per_master=1)[cluster.masters()[0].port][0]
    slot = key_slot(f"harpia:{topic}".encode())
    bps = [backplane(cluster.url), backplane(cluster.url)]
    app_a, app_b = make_app(bps[0]), make_app(bps[1])
    async with app_a.serve() as la, app_b.serve() as lb:
        (a1,) = await open_clients(la.port, 1)
        (b1,) = await open_clients(lb.port, 1)
        old = owner_of(cluster, topic)
        try:
            for client in (a1, b1):
                await command(client, f"sub {topic}")
            await eventually(lambda: cluster.shard_numsub(old, f"harpia:{topic}") == 2,
                             timeout=15, what="subscribed")
            assert old.process is not None
            old.process.send_signal(signal.SIGSTOP)
            new = await asyncio.to_thread(cluster.wait_promoted, slot, old)
            await publish_until_received(a1, b1, topic)
            await eventually(lambda: cluster.shard_numsub(new, f"harpia:{topic}") == 2,
                             timeout=15, what="resubscribed on the promoted replica")
        finally:
            close_all((a1, b1))
            if old.process is not None:
                old.process.send_signal(signal.SIGCONT)
            await asyncio.to_thread(cluster.wait_healthy)
