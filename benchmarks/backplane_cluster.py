"""The cluster and sentinel figures of ``bench_backplane.py`` (``--scale``, ``--failover``,
``--shard``): real Redis deployments started here, from the test suite's helpers.

--scale     4 harpia processes on one port, three topics (one per cluster shard), one
            wsload per topic: deliveries/s through one Redis against a 3-shard cluster
            (3 masters + 3 replicas), interleaved ``--repeat`` times; then the publish ->
            other-process latency on each.
--failover  a publisher sending every ``--interval`` ms through process A, a subscriber on
            process B; the master of the topic's slot (cluster) or the master (sentinel) is
            SIGKILLed: how long B receives nothing, how many messages it misses, whether any
            arrives twice.  harpia's defaults; Redis with a 1 s failure detection
            (``cluster-node-timeout`` / ``down-after-milliseconds``).
--shard     what one shard carries: ``redis-benchmark`` SPUBLISHes ``--envelope``-byte
            messages (pipelined) to a channel with 4 subscribers (4 processes' worth), on 1
            master, then on 3 masters at once; messages in and bytes out per second.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent / "tests"))
import bench_backplane as bb  # noqa: E402
import e2e  # noqa: E402
from redis.crc import key_slot  # noqa: E402
from redis_cluster import RedisCluster, SentinelSetup  # noqa: E402

REDIS_BENCHMARK = "redis-benchmark"
PROCESSES = 4


def topic_per_master(cluster: RedisCluster, prefix: str = "harpia:") -> list[str]:
    """One topic name per master, each hashing to a different shard."""
    wanted = {node.port for node in cluster.masters()}
    found: dict[int, str] = {}
    i = 0
    while len(found) < len(wanted):
        name = f"room{i}"
        owner = cluster.slot_owner(key_slot(f"{prefix}{name}".encode())).port
        found.setdefault(owner, name)
        i += 1
    return [found[port] for port in sorted(found)]


# ---------------------------------------------------------------- --scale


def cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) the processes have used so far."""
    return sum(e2e._cpu_seconds(pid) or 0.0 for pid in pids)


def broadcast(pubsub: str, topics: list[str], args: argparse.Namespace,
              pins: dict[str, list[str]], redis_pids: list[int]) -> dict[str, Any]:
    port = e2e.free_port()
    servers = [bb.Harpia(port, pubsub, pins["server"]) for _ in range(PROCESSES)]
    harpia_pids = [server.pid for server in servers]
    try:
        cpu_before = cpu(harpia_pids), cpu(redis_pids)
        procs = []
        for topic in topics:
            cmd = [*pins["loadgen"], str(e2e.WSLOAD), "--mode", "broadcast", "--host", bb.HOST,
                   "--port", str(port), "--path", f"/broadcast/{topic}",
                   "--conns", str(args.conns // len(topics)), "--size", str(args.size),
                   "--duration", str(args.duration), "--warmup", str(args.warmup)]
            procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=330)
            result = bb.json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
            if proc.returncode != 0 or result.get("errors"):
                raise e2e.BenchError(f"wsload failed: {result.get('error') or err.strip()}")
            results.append(result)
        harpia_cpu, redis_cpu = cpu(harpia_pids) - cpu_before[0], cpu(redis_pids) - cpu_before[1]
    finally:
        for server in servers:
            server.stop()
    deliveries = sum(r["deliveries_per_s"] for r in results) * args.duration
    return {"deliveries_per_s": sum(r["deliveries_per_s"] for r in results),
            # CPU over the whole run (connecting and warm-up too) per delivery in the measured
            # window: an upper bound of the cost, robust to a machine shared with other work.
            "harpia_cpu_us_per_delivery": harpia_cpu * 1e6 / deliveries,
            "harpia_cpu_s": harpia_cpu, "redis_cpu_s": redis_cpu,
            "msgs_per_s": sum(r["msgs_per_s"] for r in results),
            "per_topic": [r["deliveries_per_s"] for r in results],
            "peak_connections": [s.final.get("peak_connections") for s in servers],
            "backplane": [s.final.get("backplane") for s in servers]}


def latency(pubsub: str, args: argparse.Namespace, pins: dict[str, list[str]]) -> dict[str, Any]:
    port = e2e.free_port()
    servers = [bb.Harpia(port, pubsub, pins["server"]) for _ in range(PROCESSES)]
    affinity = os.sched_getaffinity(0)
    try:
        if pins["loadgen"]:
            os.sched_setaffinity(0, {int(pins["loadgen"][-1])})
        with _runner() as runner:
            times = runner.run(bb.measure_latency(servers[0], servers[1], args.latency_samples))
    finally:
        os.sched_setaffinity(0, affinity)
        for server in servers:
            server.stop()
    return {name: {"p50_us": bb.pct(v, 50), "p99_us": bb.pct(v, 99), "n": len(v)} for name, v in times.items()}


def _runner() -> asyncio.Runner:
    try:
        import uvloop
        return asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover
        return asyncio.Runner()


def scale(args: argparse.Namespace, pins: dict[str, list[str]]) -> list[str]:
    single = bb.Redis(pins["server"])
    cluster = RedisCluster.start(prefix=pins["server"])
    topics = topic_per_master(cluster)
    setups = {"1 Redis": single.url, "3-shard cluster": cluster.url}
    redis_pids = {"1 Redis": [single.proc.pid],
                  "3-shard cluster": [n.process.pid for n in cluster.nodes if n.process is not None]}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in setups}
    lat: dict[str, dict[str, Any]] = {}
    try:
        for rep in range(args.repeat):
            for name, url in setups.items():
                result = broadcast(url, topics, args, pins, redis_pids[name])
                runs[name].append(result)
                print(f"[{rep + 1}/{args.repeat}] {name}: {result['deliveries_per_s']:,.0f} deliveries/s, "
                      f"{result['msgs_per_s']:,.0f} publishes/s (per topic {result['per_topic']}), "
                      f"harpia {result['harpia_cpu_us_per_delivery']:.3f} CPU-us/delivery, Redis "
                      f"{result['redis_cpu_s']:.2f} CPU-s, "
                      f"subscribers per process {result['peak_connections']}", file=sys.stderr, flush=True)
        for name, url in setups.items():
            lat[name] = latency(url, args, pins)
    finally:
        single.stop()
        cluster.stop()

    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[name])

    base = med("1 Redis", "deliveries_per_s")
    lines = [f"{PROCESSES} harpia processes on one port, {args.conns:,} subscribers over {len(topics)} "
             f"topics (one per cluster shard), {args.size} B messages, {args.duration:g} s measured, "
             f"median of {args.repeat}; "
             f"{'unpinned' if not pins['server'] else 'servers and Redis on CPU 0, wsload on CPU 1'}.", "",
             "| backplane | deliveries/s | publishes/s | ratio | envelopes sent (last run) | per-run deliveries/s "
             "| harpia CPU per delivery | Redis CPU per run (all its processes) |",
             "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |"]
    for name in setups:
        last = runs[name][-1]
        envelopes = sum((b or {}).get("published", 0) for b in last["backplane"])
        lines.append(f"| {name} | {med(name, 'deliveries_per_s'):,.0f} | {med(name, 'msgs_per_s'):,.0f} | "
                     f"{med(name, 'deliveries_per_s') / base:.2f}x | {envelopes:,} | "
                     f"{', '.join(format(r['deliveries_per_s'] / 1e6, '.1f') + 'M' for r in runs[name])} | "
                     f"{med(name, 'harpia_cpu_us_per_delivery'):.3f} us | {med(name, 'redis_cpu_s'):.2f} s |")
    lines += ["", "| publish -> subscriber on another process | p50 | p99 | added p50 | added p99 |",
              "| --- | ---: | ---: | ---: | ---: |"]
    for name, values in lat.items():
        lines.append(f"| {name} | {values['remote']['p50_us']:,.0f} us | {values['remote']['p99_us']:,.0f} us "
                     f"| {values['added']['p50_us']:,.0f} us | {values['added']['p99_us']:,.0f} us |")
    return lines


# ---------------------------------------------------------------- --failover


async def watch_failover(a: bb.Harpia, b: bb.Harpia, interval: float, kill: Any,
                         settle: float = 2.0, limit: float = 60.0) -> dict[str, Any]:
    """Publish a numbered message every ``interval`` s through A; ``kill()`` (in a thread)
    after ``settle`` s; stop ``settle`` s after B receives again.  Times in ms."""
    sender = await bb.Client.open(a.private_port, "/probe")
    receiver = await bb.Client.open(b.private_port, "/probe?subscribe=1")
    await asyncio.sleep(0.5)
    arrivals: list[tuple[int, float]] = []
    clock = time.monotonic
    start = clock()
    killed_at: list[float] = []

    resumed: list[float] = []

    async def receive() -> None:
        while True:
            seq, now = int(await receiver.recv()), clock()
            if killed_at and arrivals and seq - arrivals[-1][0] > 1 and not resumed:
                resumed.append(now)  # the first delivery after messages went missing
            arrivals.append((seq, now))

    reader = asyncio.get_running_loop().create_task(receive())
    sent = 0
    kill_task = None
    resumed_at: float | None = None
    while clock() - start < limit:
        sender.send(b"%d" % sent)
        sent += 1
        await asyncio.sleep(interval)
        now = clock()
        if kill_task is None and now - start > settle:
            killed_at.append(now)
            kill_task = asyncio.get_running_loop().create_task(asyncio.to_thread(kill))
        if resumed and resumed_at is None:
            resumed_at = resumed[0]
        if resumed_at is not None and now - resumed_at > settle:
            break
    elapsed = clock() - start
    await asyncio.sleep(0.5)
    reader.cancel()
    promoted_s = None
    if kill_task is not None:
        promoted_s = await kill_task
    for client in (sender, receiver):
        client.writer.close()
    seqs = [s for s, _ in arrivals]
    after = [(s, t) for s, t in arrivals if t >= killed_at[0]] if killed_at else []
    gaps = [(t2 - t1, s1, s2) for (s1, t1), (s2, t2) in zip(arrivals, arrivals[1:]) if t2 >= killed_at[0]]
    worst = max(gaps) if gaps else (0.0, 0, 0)
    return {"sent": sent, "rate": round(sent / elapsed), "received": len(seqs), "unique": len(set(seqs)),
            "duplicates": len(seqs) - len(set(seqs)), "missed": sent - len(set(seqs)),
            "gap_ms": round(worst[0] * 1000), "missed_in_gap": worst[2] - worst[1] - 1,
            "promoted_after_ms": None if promoted_s is None else round(promoted_s * 1000),
            "in_order": seqs == sorted(seqs), "after_kill": len(after),
            "holes": [(round(t * 1000), s2 - s1 - 1) for t, s1, s2 in gaps if s2 - s1 > 1]}


def failover(args: argparse.Namespace, pins: dict[str, list[str]]) -> list[str]:
    rows: dict[str, list[dict[str, Any]]] = {"cluster": [], "sentinel": []}
    slot = key_slot(b"harpia:probe")
    cluster = RedisCluster.start(prefix=pins["server"])
    try:
        for rep in range(args.repeat):
            port = e2e.free_port()
            servers = [bb.Harpia(port, cluster.url, pins["server"]) for _ in range(2)]
            killed: list[Any] = []

            def kill() -> float:
                t0 = time.monotonic()
                killed.append(cluster.kill_master_of(slot))
                cluster.wait_promoted(slot, killed[0])
                return time.monotonic() - t0
            try:
                with _runner() as runner:
                    row = runner.run(watch_failover(servers[0], servers[1], args.interval / 1000, kill))
            finally:
                for server in servers:
                    server.stop()
            rows["cluster"].append(row)
            print(f"[{rep + 1}/{args.repeat}] cluster failover: {row}", file=sys.stderr, flush=True)
            if killed:
                cluster.restart(killed[0])
    finally:
        cluster.stop()
    setup = SentinelSetup.start(prefix=pins["server"])
    try:
        for rep in range(args.repeat):
            port = e2e.free_port()
            servers = [bb.Harpia(port, setup.url, pins["server"]) for _ in range(2)]
            old = setup.master()

            def kill_sentinel_master() -> float:
                t0 = time.monotonic()
                old.kill()
                setup.wait_promoted(old)
                return time.monotonic() - t0
            try:
                with _runner() as runner:
                    row = runner.run(watch_failover(servers[0], servers[1], args.interval / 1000,
                                                    kill_sentinel_master))
            finally:
                for server in servers:
                    server.stop()
            rows["sentinel"].append(row)
            print(f"[{rep + 1}/{args.repeat}] sentinel failover: {row}", file=sys.stderr, flush=True)
            setup.restart(old)
    finally:
        setup.stop()
    lines = [f"One message every {args.interval:g} ms (asked; sent/s below is what the loop achieved) through process A to a subscriber on process B; "
             f"the master SIGKILLed after 2 s; Redis failure detection 1 s; {args.repeat} failovers each.", "",
             "| deployment | replica promoted after (median) | delivery gap (median, per run) | "
             "messages missed (median, per run) | messages sent/s | duplicates | order kept |",
             "| --- | ---: | --- | --- | ---: | ---: | --- |"]
    for name, runs in rows.items():
        gaps = [r["gap_ms"] for r in runs]
        missed = [r["missed"] for r in runs]
        promoted = [r["promoted_after_ms"] for r in runs if r["promoted_after_ms"] is not None]
        lines.append(
            f"| {name} | {statistics.median(promoted) / 1000:.1f} s | {statistics.median(gaps) / 1000:.2f} s "
            f"({', '.join(f'{g / 1000:.2f}' for g in gaps)}) | {statistics.median(missed):.0f} "
            f"({', '.join(str(m) for m in missed)}) | {statistics.median(r['rate'] for r in runs):,.0f} "
            f"| {sum(r['duplicates'] for r in runs)} "
            f"| {'yes' if all(r['in_order'] for r in runs) else 'NO'} |")
    return lines


# ---------------------------------------------------------------- --shard


class Drain:
    """A raw subscriber connection that reads and discards (so it is never the bottleneck)."""

    def __init__(self, port: int, channel: str) -> None:
        self.sock = socket.create_connection((bb.HOST, port))
        self.sock.sendall(f"SSUBSCRIBE {channel}\r\n".encode())
        self.bytes = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        recv = self.sock.recv
        while True:
            try:
                data = recv(1 << 20)
            except OSError:
                return
            if not data:
                return
            self.bytes += len(data)

    def close(self) -> None:
        self.sock.close()


def shard(args: argparse.Namespace, pins: dict[str, list[str]]) -> list[str]:
    cluster = RedisCluster.start(prefix=pins["server"])
    try:
        masters = cluster.masters()
        topics = topic_per_master(cluster)
        payload = "x" * args.envelope
        results: dict[str, list[float]] = {"1 shard": [], "3 shards": []}
        out_bytes: dict[str, list[float]] = {"1 shard": [], "3 shards": []}
        master_us: dict[str, list[float]] = {"1 shard": [], "3 shards": []}
        replica_us: dict[str, list[float]] = {"1 shard": [], "3 shards": []}
        for rep in range(args.repeat):
            for name, count in (("1 shard", 1), ("3 shards", 3)):
                drains = [Drain(masters[i].port, f"harpia:{topics[i]}") for i in range(count) for _ in range(4)]
                time.sleep(0.3)
                procs = [subprocess.Popen(
                    [*pins["loadgen"], REDIS_BENCHMARK, "-h", bb.HOST, "-p", str(masters[i].port),
                     "-c", "8", "-P", "16", "-n", str(args.shard_requests), "--csv",
                     "SPUBLISH", f"harpia:{topics[i]}", payload],
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for i in range(count)]
                t0 = time.monotonic()
                before = sum(d.bytes for d in drains)
                master_pids = [masters[i].process.pid for i in range(count)]  # type: ignore[union-attr]
                replica_pids = [n.process.pid for n in cluster.nodes  # type: ignore[union-attr]
                                if n not in masters and n.process is not None]
                cpu0 = cpu(master_pids), cpu(replica_pids)
                rps = 0.0
                for proc in procs:
                    out, _ = proc.communicate(timeout=300)
                    rps += float(out.strip().splitlines()[-1].split(",")[1].strip('"'))
                elapsed = time.monotonic() - t0
                out_rate = (sum(d.bytes for d in drains) - before) / elapsed
                sent = args.shard_requests * count
                master_us[name].append((cpu(master_pids) - cpu0[0]) * 1e6 / sent)
                replica_us[name].append((cpu(replica_pids) - cpu0[1]) * 1e6 / sent)
                for drain in drains:
                    drain.close()
                results[name].append(rps)
                out_bytes[name].append(out_rate)
                print(f"[{rep + 1}/{args.repeat}] {name}: {rps:,.0f} SPUBLISH/s, "
                      f"{out_rate / 1e6:,.0f} MB/s to subscribers, master {master_us[name][-1]:.2f} "
                      f"CPU-us/SPUBLISH, replica {replica_us[name][-1]:.2f}", file=sys.stderr, flush=True)
    finally:
        cluster.stop()
    one = statistics.median(results["1 shard"])
    lines = [f"redis-benchmark SPUBLISH, {args.envelope} B messages, 8 connections x 16 pipelined, "
             f"4 subscribers per channel, {args.shard_requests:,} per shard, median of {args.repeat}; "
             f"{'unpinned' if not pins['server'] else 'all 6 redis-servers on CPU 0, clients on CPU 1'}.", "",
             "| masters publishing | SPUBLISH/s (all shards) | per shard | to subscribers | ratio "
             "| master CPU per SPUBLISH | its replica's |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, count in (("1 shard", 1), ("3 shards", 3)):
        total = statistics.median(results[name])
        lines.append(f"| {name} | {total:,.0f} | {total / count:,.0f} | "
                     f"{statistics.median(out_bytes[name]) / 1e6:,.0f} MB/s | {total / one:.2f}x "
                     f"| {statistics.median(master_us[name]):.2f} us | {statistics.median(replica_us[name]):.2f} us |")
    return lines
