#!/usr/bin/env python3
"""Publish throughput and latency through the Redis backplane, against one process alone.

In one run, interleaved ``--repeat`` times (medians reported):

  1 process   one harpia process, no Redis: the embedded topic registry.
  2 processes two harpia processes on one port (SO_REUSEPORT, as ``workers=2`` does) and
              ``pubsub="redis://..."``: the kernel spreads the subscribers over both, and
              every publish reaches the other process through Redis pub/sub.

Throughput: ``benchmarks/loadgen/wsload --mode broadcast`` (the C load generator) opens
``--conns`` subscribers on /broadcast; connection 0 sends messages of ``--size`` bytes,
keeping 64 in flight (it sends the next when its own copy comes back); the server publishes
each to the topic every connection subscribed to (``app.publish``). wsload checks that
every subscriber gets every message exactly once and in order, and counts the deliveries
to all subscribers, of both processes, within the ``--duration`` window: a process that
lags behind shows as fewer deliveries.

Latency of a cross-process publish (2-process setup, no other load): an asyncio client
sends one message at a time to process A, which publishes it; one subscriber sits on A, one
on B. For each message, the time from send to arrival on A (local delivery) and on B (A ->
Redis -> B); the added latency is B's arrival minus A's, per message. The client is idle
between messages, so it is not what is measured.

CPUs (default): every server process and redis-server on CPU 0, wsload and the latency
client on CPU 1, as the other end-to-end benchmarks do. So "2 processes" runs on the same
one core as "1 process": the figure is the cost of the broker hop, not a scale-out gain
(that needs more cores than this machine has). ``--no-pin`` lets the scheduler decide.

    python benchmarks/bench_backplane.py                  # 1,000 subscribers, 3 repetitions
    python benchmarks/bench_backplane.py --quick          # smoke test, a few seconds

Redis Cluster and Sentinel (``backplane_cluster.py``; each starts its own deployment):

    python benchmarks/bench_backplane.py --scale      # 4 processes: 1 Redis vs a 3-shard cluster
    python benchmarks/bench_backplane.py --failover   # delivery gap when a master is killed
    python benchmarks/bench_backplane.py --shard      # SPUBLISH throughput of 1 and 3 shards
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
import e2e  # noqa: E402

HOST = "127.0.0.1"
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


# ---------------------------------------------------------------- the server (--serve)


def serve(args: argparse.Namespace) -> None:
    """One harpia process: /broadcast (wsload's contract) and /probe (the latency client)."""
    from harpia import harpia
    from harpia.server import run

    app = harpia(pubsub=args.pubsub)
    peak = 0

    def broadcast_open(ws: Any) -> None:
        nonlocal peak
        ws.subscribe("all")
        peak = max(peak, len(app.websocket.connections))

    app.ws("/broadcast", {"open": broadcast_open,
                          "message": lambda ws, message: app.publish("all", message)},
           max_payload_length=64 * 1024 * 1024)

    # /broadcast/:topic: the same on a topic of the client's choosing (topics on several shards).
    def topic_open(ws: Any) -> None:
        nonlocal peak
        ws.subscribe(ws.params["topic"])
        peak = max(peak, len(app.websocket.connections))

    app.ws("/broadcast/:topic", {
        "open": topic_open,
        "message": lambda ws, message: app.publish(ws.params["topic"], message)},
        max_payload_length=64 * 1024 * 1024)

    def probe_open(ws: Any) -> None:
        if ws.query.get("subscribe"):
            ws.subscribe("probe")

    app.ws("/probe", {"open": probe_open, "message": lambda ws, message: app.publish("probe", message)})

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        async with app.serve(host=HOST, port=args.port, reuse_port=True), \
                app.serve(host=HOST, port=0) as private:
            print(json.dumps({"pid": os.getpid(), "private_port": private.port}), flush=True)
            await stop.wait()
        stats = getattr(app.hub.backplane, "stats", None)
        print(json.dumps({"peak_connections": peak, "backplane": stats}), flush=True)

    run(main())


# ---------------------------------------------------------------- processes


class Redis:
    def __init__(self, pin: list[str]) -> None:
        self.port = e2e.free_port()
        self.dir = tempfile.mkdtemp(prefix="harpia-bench-redis-")
        self.proc = subprocess.Popen(
            [*pin, REDIS_SERVER, "--port", str(self.port), "--bind", HOST, "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, self.proc)

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


class Harpia:
    """One ``--serve`` process on the shared port."""

    def __init__(self, port: int, pubsub: str | None, pin: list[str]) -> None:
        cmd = [*pin, sys.executable, str(Path(__file__).resolve()), "--serve", "--port", str(port)]
        if pubsub:
            cmd += ["--pubsub", pubsub]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     env=e2e.server_env(), preexec_fn=e2e._raise_nofile)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise e2e.BenchError(f"the server exited with {self.proc.wait()} before listening")
        info = json.loads(line)
        self.pid = int(info["pid"])
        self.private_port = int(info["private_port"])
        self.final: dict[str, Any] = {}

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=30)
        lines = out.decode().strip().splitlines()
        self.final = json.loads(lines[-1]) if lines else {}


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise e2e.BenchError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise e2e.BenchError(f"nothing listens on port {port}") from None
            time.sleep(0.02)


# ---------------------------------------------------------------- throughput


def run_broadcast(setup: str, redis: Redis, args: argparse.Namespace, pins: dict[str, list[str]]) -> dict[str, Any]:
    port = e2e.free_port()
    count = 1 if setup == "1 process" else 2
    pubsub = None if count == 1 else redis.url
    servers = [Harpia(port, pubsub, pins["server"]) for _ in range(count)]
    try:
        cmd = [*pins["loadgen"], str(e2e.WSLOAD), "--mode", "broadcast", "--host", HOST,
               "--port", str(port), "--path", "/broadcast", "--conns", str(args.conns),
               "--size", str(args.size), "--duration", str(args.duration), "--warmup", str(args.warmup)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=330)
        result = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {}
        if proc.returncode != 0 or result.get("errors"):
            raise e2e.BenchError(f"wsload failed ({setup}): {result.get('error') or proc.stderr.strip()}")
        result["command"] = " ".join(cmd)
    finally:
        for server in servers:
            server.stop()
    result["peak_connections"] = [s.final.get("peak_connections") for s in servers]
    result["backplane"] = [s.final.get("backplane") for s in servers]
    return result


# ---------------------------------------------------------------- latency


class Client:
    """A minimal WebSocket client on asyncio streams (text frames, no fragments)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, path: str) -> Client:
        reader, writer = await asyncio.open_connection(HOST, port)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    def send(self, payload: bytes) -> None:
        from harpia._frames import serialize_frame

        self.writer.write(serialize_frame(1, payload, mask=b"\x01\x02\x03\x04"))

    async def recv(self) -> bytes:
        b0, b1 = await self.reader.readexactly(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", await self.reader.readexactly(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
        return await self.reader.readexactly(n)


async def measure_latency(a: Harpia, b: Harpia, samples: int) -> dict[str, list[float]]:
    sender = await Client.open(a.private_port, "/probe")
    on_a = await Client.open(a.private_port, "/probe?subscribe=1")
    on_b = await Client.open(b.private_port, "/probe?subscribe=1")
    await asyncio.sleep(0.3)  # B's SUBSCRIBE reaches Redis
    local: list[float] = []
    remote: list[float] = []
    added: list[float] = []
    clock = time.perf_counter_ns

    async def arrival(client: Client, expected: bytes) -> int:
        while True:
            if await client.recv() == expected:
                return clock()

    for i in range(samples + 200):
        payload = b"%012d" % i
        t0 = clock()
        sender.send(payload)
        t_a, t_b = await asyncio.gather(arrival(on_a, payload), arrival(on_b, payload))
        if i >= 200:  # the first 200 warm up
            local.append((t_a - t0) / 1e3)
            remote.append((t_b - t0) / 1e3)
            added.append((t_b - t_a) / 1e3)
        await asyncio.sleep(0.0005)
    for client in (sender, on_a, on_b):
        client.writer.close()
    return {"local": local, "remote": remote, "added": added}


def latency_run(redis: Redis, args: argparse.Namespace, pins: dict[str, list[str]]) -> dict[str, Any]:
    port = e2e.free_port()
    servers = [Harpia(port, redis.url, pins["server"]) for _ in range(2)]
    affinity = os.sched_getaffinity(0)
    try:
        if pins["loadgen"]:
            os.sched_setaffinity(0, {int(pins["loadgen"][-1])})
        try:
            import uvloop
            runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
        except ImportError:  # pragma: no cover
            runner = asyncio.Runner()
        with runner:
            times = runner.run(measure_latency(servers[0], servers[1], args.latency_samples))
    finally:
        os.sched_setaffinity(0, affinity)
        for server in servers:
            server.stop()
    return {name: {"p50_us": pct(values, 50), "p99_us": pct(values, 99), "n": len(values)}
            for name, values in times.items()}


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))], 1)


# ---------------------------------------------------------------- report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--pubsub", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--conns", type=int, default=1000, help="subscribers (default 1000)")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per run (default 5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before (default 1)")
    parser.add_argument("--size", type=int, default=32, help="payload bytes (default 32)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions, medians reported (default 3)")
    parser.add_argument("--latency-samples", type=int, default=3000, help="cross-process publishes timed")
    parser.add_argument("--no-pin", action="store_true", help="do not pin servers to CPU 0, clients to CPU 1")
    parser.add_argument("--quick", action="store_true", help="100 subscribers, 1 repetition: a smoke test")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--scale", action="store_true",
                        help="4 processes: one Redis against a 3-shard cluster (backplane_cluster.py)")
    parser.add_argument("--failover", action="store_true", help="the delivery gap of a failover, "
                        "cluster and sentinel")
    parser.add_argument("--shard", action="store_true", help="SPUBLISH throughput of 1 and 3 shards")
    parser.add_argument("--interval", type=float, default=1.0, help="--failover: ms between messages")
    parser.add_argument("--envelope", type=int, default=1024, help="--shard: bytes per SPUBLISH")
    parser.add_argument("--shard-requests", type=int, default=300_000, help="--shard: SPUBLISH per shard")
    args = parser.parse_args()
    if args.serve:
        serve(args)
        return 0
    if args.scale or args.failover or args.shard:
        import backplane_cluster

        if args.quick:
            args.conns, args.duration, args.warmup, args.repeat = 300, 1.0, 0.2, 1
            args.latency_samples, args.shard_requests = 300, 100_000
        e2e.build_loadgen()
        pins = {"server": [] if args.no_pin else e2e.pin(e2e.SERVER_CPU),
                "loadgen": [] if args.no_pin else e2e.pin(e2e.LOADGEN_CPU)}
        for wanted, measure in ((args.shard, backplane_cluster.shard),
                                (args.scale, backplane_cluster.scale),
                                (args.failover, backplane_cluster.failover)):
            if wanted:
                print("\n".join(measure(args, pins)) + "\n", flush=True)
        return 0
    if args.quick:
        args.conns, args.duration, args.warmup, args.repeat, args.latency_samples = 100, 1.0, 0.2, 1, 300
    if not os.path.exists(REDIS_SERVER):
        print("redis-server is needed (apt-get install redis-server)", file=sys.stderr)
        return 1
    e2e.build_loadgen()
    pins = {"server": [] if args.no_pin else e2e.pin(e2e.SERVER_CPU),
            "loadgen": [] if args.no_pin else e2e.pin(e2e.LOADGEN_CPU)}
    setups = ["1 process", "2 processes"]
    redis = Redis(pins["server"])
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in setups}
    try:
        for rep in range(args.repeat):
            for setup in setups:
                result = run_broadcast(setup, redis, args, pins)
                runs[setup].append(result)
                print(f"[{rep + 1}/{args.repeat}] {setup}: {result['deliveries_per_s']:,.0f} deliveries/s, "
                      f"{result['msgs_per_s']:,.0f} publishes/s, subscribers per process "
                      f"{result['peak_connections']}", file=sys.stderr, flush=True)
        latency = latency_run(redis, args, pins)
    finally:
        redis.stop()

    def med(setup: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[setup])

    one, two = (med(s, "deliveries_per_s") for s in setups)
    last_two = runs["2 processes"][-1]
    envelopes = sum((b or {}).get("published", 0) for b in last_two["backplane"])
    published = int(last_two["msgs_per_s"] * last_two["duration_s"])
    lines = [
        f"Publish to {args.conns:,} subscribers, {args.size} B text, {args.duration:g} s measured, "
        f"median of {args.repeat}; {'unpinned' if args.no_pin else 'servers and redis-server on CPU 0, wsload on CPU 1'}.",
        "",
        "| setup | deliveries/s | publishes/s | subscribers per process | wsload CPU |",
        "| --- | ---: | ---: | --- | ---: |",
    ]
    for setup in setups:
        last = runs[setup][-1]
        lines.append(f"| {setup}{'' if setup == '1 process' else ' through Redis'} | {med(setup, 'deliveries_per_s'):,.0f} "
                     f"| {med(setup, 'msgs_per_s'):,.0f} | {' + '.join(str(n) for n in last['peak_connections'])} "
                     f"| {med(setup, 'loadgen_cpu_pct'):.0f} % |")
    lines += [
        "",
        f"2 processes through Redis / 1 process: {two / one:.2f}x "
        f"(Redis messages: {envelopes:,} envelopes for {published:,} publishes in the last run)",
        "",
        f"Cross-process publish latency ({latency['added']['n']:,} publishes, one at a time):",
        "",
        "| path | p50 | p99 |",
        "| --- | ---: | ---: |",
        f"| send -> subscriber on the publishing process | {latency['local']['p50_us']:,.0f} us | {latency['local']['p99_us']:,.0f} us |",
        f"| send -> subscriber on the other process (via Redis) | {latency['remote']['p50_us']:,.0f} us | {latency['remote']['p99_us']:,.0f} us |",
        f"| added by the cross-process hop (per message) | {latency['added']['p50_us']:,.0f} us | {latency['added']['p99_us']:,.0f} us |",
    ]
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "latency": latency, "args": vars(args)},
                                        default=str, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
