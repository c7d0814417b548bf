#!/usr/bin/env python3
"""ASGI benchmarks: harpia serving a FastAPI / plain ASGI app beside uvicorn and granian.

One run puts every server side by side and reports medians of --repeat runs and ratios
(server pinned to CPU 0, the load generator to CPU 1, repetitions interleaved):

  HTTP        wrk (keep-alive, 1 thread, 64 connections) on FastAPI GET /json and a plain
              ASGI "hello": harpia vs uvicorn (httptools + uvloop) vs granian
  WebSocket   wsload on FastAPI's /echo endpoint, 32 B and 16 KiB, ping-pong on 100
              connections and 100 x 16 pipelined: harpia vs uvicorn (its default
              WebSocket implementation) vs granian
  native      wsload on harpia's own /native echo route, with and without a mounted app

    python benchmarks/asgi_bench.py                  # everything, 3 repetitions (~12 min)
    python benchmarks/asgi_bench.py --quick          # 1 repetition, 2 s runs: a smoke test
    python benchmarks/asgi_bench.py --groups http --repeat 5

wrk comes from the distribution (apt-get install wrk); uvicorn, granian and FastAPI from
the bench extra (pip install -e '.[bench]').
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import e2e  # noqa: E402

SERVER = Path(__file__).resolve().parent / "servers" / "asgi_server.py"


@dataclass(frozen=True)
class Case:
    group: str
    name: str
    app: str                 # asgi_targets attribute
    servers: tuple[str, ...]
    baseline: str
    tool: str                # "wrk" or "wsload"
    args: tuple[str, ...]    # wrk path, or wsload arguments
    unit: str


_WS = ("harpia", "uvicorn", "granian")
CASES = (
    Case("http", "FastAPI GET /json", "api", _WS, "uvicorn", "wrk", ("/json",), "req/s"),
    Case("http", "ASGI hello", "hello", _WS, "uvicorn", "wrk", ("/",), "req/s"),
    Case("ws", "pingpong-100 32 B", "api", _WS, "uvicorn", "wsload",
         ("--mode", "pingpong", "--conns", "100", "--size", "32", "--text"), "msg/s"),
    Case("ws", "pingpong-100 16 KiB", "api", _WS, "uvicorn", "wsload",
         ("--mode", "pingpong", "--conns", "100", "--size", "16384", "--binary"), "msg/s"),
    Case("ws", "pipeline-100x16 32 B", "api", _WS, "uvicorn", "wsload",
         ("--mode", "pipeline", "--conns", "100", "--depth", "16", "--size", "32", "--text"), "msg/s"),
    Case("ws", "pipeline-100x16 16 KiB", "api", _WS, "uvicorn", "wsload",
         ("--mode", "pipeline", "--conns", "100", "--depth", "16", "--size", "16384", "--binary"),
         "msg/s"),
    Case("native", "native pingpong-100 32 B", "api", ("harpia-native", "harpia"), "harpia-native",
         "wsload", ("--mode", "pingpong", "--conns", "100", "--size", "32", "--text",
                    "--path", "/native"), "msg/s"),
    Case("native", "native pipeline-100x16 32 B", "api", ("harpia-native", "harpia"),
         "harpia-native", "wsload", ("--mode", "pipeline", "--conns", "100", "--depth", "16",
                                     "--size", "32", "--text", "--path", "/native"), "msg/s"),
)


def start_server(server: str, app: str) -> tuple[subprocess.Popen[bytes], int]:
    port = e2e.free_port()
    cmd = [*e2e.pin(e2e.SERVER_CPU), sys.executable, str(SERVER), "--server", server,
           "--app", app, "--port", str(port)]
    proc = subprocess.Popen(cmd, env=e2e.server_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise e2e.BenchError(f"{server} exited: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        try:
            with socket.create_connection((e2e.HOST, port), timeout=0.2):
                return proc, port
        except OSError:
            time.sleep(0.1)
    stop_server(proc)
    raise e2e.BenchError(f"{server} did not listen within 30 s")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGINT)
            proc.wait(10)
        except subprocess.TimeoutExpired:
            import os
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def tree_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and all its descendants (granian's workers)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    family, grew = {pid}, True
    while grew:
        more = {child for child, parent in parents.items() if parent in family} - family
        family |= more
        grew = bool(more)
    return sum(times.get(p, 0.0) for p in family)


def run_wrk(port: int, path: str, duration: float) -> float:
    cmd = [*e2e.pin(e2e.LOADGEN_CPU), "wrk", "-t1", "-c64", f"-d{max(1, round(duration))}s",
           f"http://{e2e.HOST}:{port}{path}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not match or "Non-2xx" in out or "Socket errors" in out and "read 0" not in out:
        raise e2e.BenchError(f"wrk failed: {out}")
    return float(match.group(1))


def run_wsload(port: int, args: tuple[str, ...], duration: float, warmup: float) -> float:
    cmd = [*e2e.pin(e2e.LOADGEN_CPU), str(e2e.WSLOAD), *args, "--host", e2e.HOST,
           "--port", str(port), "--duration", str(duration), "--warmup", str(warmup)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + warmup + 120)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise e2e.BenchError(f"wsload failed ({proc.returncode}): {proc.stderr.strip()}")
    import json
    return float(json.loads(lines[-1])["msgs_per_s"])


def measure(case: Case, server: str, duration: float, warmup: float) -> tuple[float, float]:
    """Throughput, and the same per CPU second the server used (less sensitive to what
    else runs on the machine)."""
    proc, port = start_server(server, case.app)
    try:
        if case.tool == "wrk":
            run_wrk(port, case.args[0], warmup)          # warm-up: connections, caches
            cpu = tree_cpu_seconds(proc.pid)
            rate = run_wrk(port, case.args[0], duration)
            spent = max(1, round(duration))
        else:
            cpu = tree_cpu_seconds(proc.pid)
            rate = run_wsload(port, case.args, duration, warmup)
            spent = duration + warmup  # warm-up traffic flows at about the same rate
        cpu = tree_cpu_seconds(proc.pid) - cpu
        return rate, rate * spent / cpu if cpu > 0 else 0.0
    finally:
        stop_server(proc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--groups", default="http,ws,native")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.repeat, args.duration, args.warmup = 1, 2.0, 0.5
    if shutil.which("wrk") is None:
        sys.exit("wrk is missing: apt-get install wrk")
    e2e.build_loadgen()
    groups = set(args.groups.split(","))
    cases = [c for c in CASES if c.group in groups]
    results: dict[tuple[str, str], list[float]] = {}
    per_cpu: dict[tuple[str, str], list[float]] = {}
    for rep in range(args.repeat):
        for case in cases:
            for server in case.servers:     # interleaved: drift hits every server alike
                try:
                    value, efficiency = measure(case, server, args.duration, args.warmup)
                except e2e.BenchError as exc:
                    print(f"# {case.name} on {server}: {exc}", file=sys.stderr)
                    continue
                results.setdefault((case.name, server), []).append(value)
                per_cpu.setdefault((case.name, server), []).append(efficiency)
                print(f"# rep {rep + 1}: {case.name} on {server}: {value:,.0f} {case.unit}, "
                      f"{efficiency:,.0f} per server CPU second", file=sys.stderr, flush=True)
    load = os.getloadavg()
    print(f"Throughput (median of {args.repeat}; load average {load[0]:.1f} at the end):\n")
    print(render(cases, results))
    print("Per CPU second the server process(es) used (same runs):\n")
    print(render(cases, per_cpu))
    return 0


def render(cases: list[Case], results: dict[tuple[str, str], list[float]]) -> str:
    lines = []
    for group in dict.fromkeys(c.group for c in cases):
        members = [c for c in cases if c.group == group]
        servers = list(dict.fromkeys(s for c in members for s in c.servers))
        baseline = members[0].baseline
        lines.append(f"| {group} | " + " | ".join(servers) + " | " +
                     " | ".join(f"{s} / {baseline}" for s in servers if s != baseline) + " |")
        lines.append("|---" * (1 + len(servers) + len(servers) - 1) + "|")
        for case in members:
            medians = {s: statistics.median(results[(case.name, s)])
                       for s in servers if results.get((case.name, s))}
            cells = [f"{medians[s]:,.0f}" if s in medians else "n/a" for s in servers]
            base = medians.get(case.baseline)
            ratios = [f"{medians[s] / base:.2f}x" if base and s in medians else "n/a"
                      for s in servers if s != case.baseline]
            lines.append(f"| {case.name} ({case.unit}) | " + " | ".join(cells) + " | "
                         + " | ".join(ratios) + " |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
