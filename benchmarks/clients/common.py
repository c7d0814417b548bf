"""What every benchmark client shares: the command line, the scenarios, the measurement.

A client runs one scenario against ``--url`` (the server's base URL) and prints one JSON
line: ``{"count": N, "seconds": T, "cpu": C}``, N being messages received (or connections
made and closed, for ``connect``) during the T seconds after a warm-up, C the CPU seconds
the client process used meanwhile (less sensitive than N to a busy machine).  Every client runs on
uvloop and echoes in its library's fastest documented way.

A driver gives :func:`run` two coroutine functions: one that opens a connection and closes
it again (the ``connect`` scenario), and one that opens the scenario's connections, starts
its load and returns how to stop it.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import uvloop


@dataclass(frozen=True)
class Scenario:
    path: str        # on the server: /echo, /feed?size=N
    conns: int       # connections (connect: concurrent workers)
    inflight: int    # messages each connection keeps in flight (0: receive only)
    size: int = 32


SCENARIOS = {
    "pingpong-1": Scenario("/echo", 1, 1),
    "pingpong-100": Scenario("/echo", 100, 1),
    "pipeline-100x16": Scenario("/echo", 100, 16),
    "feed-32": Scenario("/feed?size=32", 1, 0),
    "feed-4k": Scenario("/feed?size=4096", 1, 0),
    "connect": Scenario("/echo", 4, 0),
}


class Counter:
    """Messages (or connections) seen so far; handlers add to ``COUNT.n``.

    An instance with a slot, not a class attribute: assigning a class attribute
    invalidates the class's method cache, which cost every client a few hundred
    nanoseconds per message in this harness's own code."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0


COUNT = Counter()


Stop = Callable[[], Awaitable[None]]
#: Opens one connection and closes it (``url``, the command line).
ConnectAndClose = Callable[[str, argparse.Namespace], Awaitable[None]]
#: Opens the scenario's connections, starts the load, returns how to stop it.
StartLoad = Callable[[str, Scenario, argparse.Namespace], Awaitable[Stop]]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True, help="ws://host:port of the server")
    parser.add_argument("--scenario", required=True, choices=sorted(SCENARIOS))
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--busy-poll", type=float, default=0.0, help="harpia only")
    return parser.parse_args()


async def measure(seconds: float, warmup: float, stop: Stop) -> None:
    """Let the load run, count what arrives in ``seconds`` after ``warmup``, print it."""
    await asyncio.sleep(warmup)
    start, t0, c0 = COUNT.n, time.perf_counter(), time.process_time()
    await asyncio.sleep(seconds)
    end, t1, c1 = COUNT.n, time.perf_counter(), time.process_time()
    print(json.dumps({"count": end - start, "seconds": t1 - t0, "cpu": c1 - c0}), flush=True)
    await stop()


async def _connect_workers(connect_and_close: ConnectAndClose, url: str,
                           args: argparse.Namespace, workers: int) -> Stop:
    """The connect scenario's load: ``workers`` tasks connecting and closing over and over."""
    running = True

    async def worker() -> None:
        while running:
            await connect_and_close(url, args)
            COUNT.n += 1

    tasks = [asyncio.ensure_future(worker()) for _ in range(workers)]

    async def stop() -> None:
        nonlocal running
        running = False
        await asyncio.gather(*tasks)
    return stop


def run(connect_and_close: ConnectAndClose, start_load: StartLoad) -> None:
    """Run the scenario the command line names, on uvloop, and print its measurement."""
    args = parse_args()
    scenario = SCENARIOS[args.scenario]
    url = args.url + scenario.path

    async def main() -> None:
        if args.scenario == "connect":
            stop = await _connect_workers(connect_and_close, url, args, scenario.conns)
        else:
            stop = await start_load(url, scenario, args)
        await measure(args.seconds, args.warmup, stop)
    uvloop.run(main())
