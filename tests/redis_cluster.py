"""Real Redis deployments for the cluster and sentinel backplane tests, on 127.0.0.1.

``RedisCluster.start()`` starts six ``redis-server`` processes in cluster mode and joins them
with ``redis-cli --cluster create ... --cluster-replicas 1``: 3 masters, 3 replicas, a short
``cluster-node-timeout`` so that a killed master's replica takes over within a few seconds.
``SentinelSetup.start()`` starts a master, a replica and three sentinels (``redis-server
--sentinel``, the same binary Debian's ``redis-sentinel`` package links to).

Everything runs in a temporary directory and is stopped by ``stop()``; a missing binary
raises (the tests fail rather than skip).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
import redis
from redis_server import REDIS_SERVER, terminate

REDIS_CLI = os.environ.get("HARPIA_REDIS_CLI") or shutil.which("redis-cli") or "/usr/bin/redis-cli"
#: Milliseconds without an answer before a master is considered failed (Redis's default is 15 s).
NODE_TIMEOUT_MS = 1000


def wait_for(check: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (redis.RedisError, OSError) as exc:
            last = exc
        if last:
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}: last {last!r}")


def free_port_pair() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port > 55000:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair")


class RedisNode:
    """One ``redis-server`` process with its own directory (its cluster config survives a kill)."""

    def __init__(self, port: int, workdir: Path, args: list[str], prefix: Sequence[str] = ()) -> None:
        self.port = port
        self.prefix = list(prefix)  # e.g. ["taskset", "-c", "0"] (the benchmarks pin servers)
        self.dir = workdir / str(port)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None

    def launch(self) -> None:
        assert self.process is None or self.process.poll() is not None, "already running"
        self.process = subprocess.Popen(
            [*self.prefix, REDIS_SERVER, *self.args], cwd=self.dir,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def command(self, *args: str | bytes | int) -> object:
        with self.client() as client:
            return client.execute_command(*args)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(5)

    def stop(self) -> None:
        if self.alive():
            assert self.process is not None
            terminate(self.process)


def _server_args(port: int) -> list[str]:
    return ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--protected-mode", "no", "--loglevel", "warning", "--logfile", "redis.log"]


class RedisCluster:
    """3 masters + 3 replicas (``redis-cli --cluster create``)."""

    def __init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="harpia-cluster-"))
        self.nodes: list[RedisNode] = []

    @classmethod
    def start(cls, size: int = 6, replicas: int = 1, prefix: Sequence[str] = ()) -> RedisCluster:
        for binary in (REDIS_SERVER, REDIS_CLI):
            if not os.access(binary, os.X_OK):
                raise RuntimeError(f"{binary} not found: the cluster tests need Debian's redis-server "
                                   "and redis-cli (apt-get install redis-server; ci/test does)")
        cluster = cls()
        try:
            for _ in range(size):
                port = free_port_pair()
                node = RedisNode(port, cluster.workdir, prefix=prefix, args=_server_args(port) + [
                    "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                    "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                    # A replica may take over however long it was cut off from its master
                    # (an empty data set here; the default refuses after 10 node timeouts).
                    "--cluster-replica-validity-factor", "0"])
                node.launch()
                cluster.nodes.append(node)
            for node in cluster.nodes:
                wait_for(lambda node=node: node.command("PING"), 10, f"redis on {node.port}")
            subprocess.run(
                [REDIS_CLI, "--cluster", "create",
                 *(f"127.0.0.1:{node.port}" for node in cluster.nodes),
                 "--cluster-replicas", str(replicas), "--cluster-yes"],
                check=True, timeout=60, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            cluster.wait_healthy()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes[:2])

    def node(self, port: int) -> RedisNode:
        return next(node for node in self.nodes if node.port == port)

    def live(self) -> list[RedisNode]:
        return [node for node in self.nodes if node.alive()]

    def slot_owner(self, slot: int, skip: RedisNode | None = None) -> RedisNode:
        """The master that serves ``slot``, as a live node (not ``skip``) sees it."""
        for node in self.live():
            if node is skip:
                continue
            try:
                for start, end, master, *_ in node.command("CLUSTER", "SLOTS"):  # type: ignore[union-attr]
                    if start <= slot <= end:
                        return self.node(int(master[1]))
            except redis.RedisError:
                continue
        raise RuntimeError(f"no live node knows slot {slot}")

    def masters(self) -> list[RedisNode]:
        ports = set()
        for node in self.live():
            for start, end, master, *_ in node.command("CLUSTER", "SLOTS"):  # type: ignore[union-attr]
                ports.add(int(master[1]))
            break
        return [self.node(port) for port in sorted(ports)]

    def shard_numsub(self, node: RedisNode, channel: str) -> int:
        reply = node.command("PUBSUB", "SHARDNUMSUB", channel)
        assert isinstance(reply, list)
        return int(reply[1])

    def wait_healthy(self, timeout: float = 30, skip: RedisNode | None = None) -> None:
        """Every live node (but ``skip``) says ``cluster_state:ok``, all slots served, and
        every replica is in sync with its master."""
        def healthy() -> bool:
            for node in self.live():
                if node is skip:
                    continue
                info = node.command("CLUSTER", "INFO")
                text = info.decode() if isinstance(info, bytes) else str(info)
                if "cluster_state:ok" not in text or "cluster_slots_ok:16384" not in text:
                    return False
                role = node.command("ROLE")
                if isinstance(role, list) and role[0] == b"slave" and role[3] != b"connected":
                    return False  # a replica still syncing could not take over
            return True
        wait_for(healthy, timeout, "the cluster to be healthy")

    def kill_master_of(self, slot: int) -> RedisNode:
        """SIGKILL the master of ``slot``; returns it (``restart`` brings it back as a replica)."""
        master = self.slot_owner(slot)
        master.kill()
        return master

    def wait_promoted(self, slot: int, old: RedisNode, timeout: float = 30) -> RedisNode:
        """Wait until a live node other than ``old`` serves ``slot`` and the cluster is ok."""
        wait_for(lambda: self.slot_owner(slot, skip=old) is not old, timeout,
                 f"a new master for slot {slot}")
        self.wait_healthy(timeout, skip=old)
        return self.slot_owner(slot, skip=old)

    def restart(self, node: RedisNode, timeout: float = 30) -> None:
        node.launch()
        wait_for(lambda: node.command("PING"), 10, f"redis on {node.port}")
        self.wait_healthy(timeout)

    def move_slot(self, slot: int, target: RedisNode) -> None:
        """Reassign ``slot`` (it holds no keys) to ``target``, as a reshard does."""
        source = self.slot_owner(slot)
        target_id = target.command("CLUSTER", "MYID")
        source_id = source.command("CLUSTER", "MYID")
        assert isinstance(target_id, bytes) and isinstance(source_id, bytes)
        target.command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        source.command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        target.command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        source.command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        for node in self.masters():
            if node is not source and node is not target:
                node.command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        wait_for(lambda: self.slot_owner(slot) is target, 10, f"slot {slot} on {target.port}")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        if not os.environ.get("HARPIA_KEEP_REDIS_DIRS"):
            shutil.rmtree(self.workdir, ignore_errors=True)


class SentinelSetup:
    """A master, one replica and three sentinels watching them as ``service``."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.workdir = Path(tempfile.mkdtemp(prefix="harpia-sentinel-"))
        self.servers: list[RedisNode] = []
        self.sentinels: list[RedisNode] = []

    @classmethod
    def start(cls, service: str = "harpia", prefix: Sequence[str] = ()) -> SentinelSetup:
        setup = cls(service)
        try:
            master_port = free_port_pair()
            master = RedisNode(master_port, setup.workdir, _server_args(master_port), prefix)
            replica_port = free_port_pair()
            replica = RedisNode(replica_port, setup.workdir, _server_args(replica_port) + [
                "--replicaof", "127.0.0.1", str(master_port)], prefix)
            setup.servers = [master, replica]
            for node in setup.servers:
                node.launch()
            for node in setup.servers:
                wait_for(lambda node=node: node.command("PING"), 10, f"redis on {node.port}")
            for _ in range(3):
                port = free_port_pair()
                node = RedisNode(port, setup.workdir, [], prefix)
                (node.dir / "sentinel.conf").write_text(
                    f"port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {node.dir}\n"
                    f"logfile sentinel.log\n"
                    f"sentinel monitor {service} 127.0.0.1 {master_port} 2\n"
                    f"sentinel down-after-milliseconds {service} {NODE_TIMEOUT_MS}\n"
                    f"sentinel failover-timeout {service} 10000\n"
                    f"sentinel parallel-syncs {service} 1\n")
                node.args = [str(node.dir / "sentinel.conf"), "--sentinel"]
                node.launch()
                setup.sentinels.append(node)
            for node in setup.sentinels:
                wait_for(lambda node=node: node.command("PING"), 10, f"sentinel on {node.port}")
            # A sentinel learns of replicas from the master's INFO, polled every 10 s: on a
            # loaded machine the replica may miss the first polls.
            wait_for(setup._replica_known, 60, "the sentinels to see the replica")
        except BaseException:
            setup.stop()
            raise
        return setup

    def _replica_known(self) -> bool:
        for sentinel in self.sentinels:
            replicas = sentinel.command("SENTINEL", "REPLICAS", self.service)
            if not replicas:
                return False
        return True

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}"

    def master(self) -> RedisNode:
        reply = self.sentinels[0].command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
        assert isinstance(reply, list)
        port = int(reply[1])
        return next(node for node in self.servers if node.port == port)

    def wait_promoted(self, old: RedisNode, timeout: float = 40) -> RedisNode:
        def promoted() -> bool:
            for sentinel in self.sentinels:
                if not sentinel.alive():
                    continue
                reply = sentinel.command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
                if not isinstance(reply, list) or int(reply[1]) == old.port:
                    return False
            new = self.master()
            role = new.command("ROLE")
            return isinstance(role, list) and role[0] == b"master"
        wait_for(promoted, timeout, "the sentinels to promote the replica")
        return self.master()

    def restart(self, node: RedisNode, timeout: float = 40) -> None:
        """Start a killed server again; the sentinels make it a replica of the new master."""
        node.launch()
        wait_for(lambda: node.command("PING"), 10, f"redis on {node.port}")

        def rejoined() -> bool:
            role = node.command("ROLE")
            return isinstance(role, list) and role[0] == b"slave" and role[3] == b"connected"
        wait_for(rejoined, timeout, "the old master to come back as a replica")

    def stop(self) -> None:
        for node in self.sentinels + self.servers:
            node.stop()
        if not os.environ.get("HARPIA_KEEP_REDIS_DIRS"):
            shutil.rmtree(self.workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    """One Redis Cluster for a whole test module (it takes a few seconds to form)."""
    deployment = RedisCluster.start()
    try:
        yield deployment
    finally:
        deployment.stop()


@pytest.fixture
def sentinel() -> Iterator[SentinelSetup]:
    """A master, a replica and three sentinels for one test."""
    setup = SentinelSetup.start()
    try:
        yield setup
    finally:
        setup.stop()
