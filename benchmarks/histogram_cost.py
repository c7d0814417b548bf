"""What the latency histograms cost per message and per publish, in process, side by side.

The end-to-end ratio (``benchmarks/run --servers harpia,harpia-nohist``) is the real
measure, but on a shared machine its noise is larger than the few per cent at stake; this
measures the two per-event costs directly, alternating with and without, over
``--repeat`` rounds; it prints the minimum of the rounds (the cost without interference
from other processes, which only ever adds) and the median:

* the frame engine delivering 10,000 32-byte frames to a Python handler, with and without
  a ``handler_timer`` (one call in 64 timed);
* ``Latencies.published()`` plus its end-of-turn callback, against a publish to 1,000
  subscribers (the broadcast-1000 scenario's unit of work).

    taskset -c 1 python benchmarks/histogram_cost.py
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

from harpia._frames import FrameEngine, publish, serialize_frame
from harpia.histograms import Histogram, Latencies

N = 10_000
KEY = b"\x8c\x1f\x42\xe7"


def deliver(stream: bytes, timed: bool) -> float:
    count = 0

    def on_message(ws: FrameEngine, message: bytes) -> None:
        nonlocal count
        count += 1

    engine = FrameEngine()
    engine.bind_message_handler(on_message, 2)
    if timed:
        engine.handler_timer = Histogram().observe_ns
    started = time.perf_counter()
    engine.feed(stream)
    elapsed = time.perf_counter() - started
    assert count == N
    return elapsed / N


async def publish_cost(timed: bool, subscribers: tuple[FrameEngine, ...], rounds: int) -> float:
    """One loop turn per publish, as a server has: publish, then the turn ends."""
    latencies = Latencies() if timed else None
    frame = b"x" * 32
    elapsed = 0.0
    for _ in range(rounds):
        started = time.perf_counter()
        publish(subscribers, frame)
        if latencies is not None:
            latencies.published()
        await asyncio.sleep(0)          # the end of the loop turn: the callback runs
        elapsed += time.perf_counter() - started
        for engine in subscribers:      # what the cork would write (not timed)
            engine.data_to_send()
    return elapsed / rounds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    stream = b"".join(serialize_frame(2, os.urandom(32), mask=KEY) for _ in range(N))
    plain, timed = [], []
    for _ in range(args.repeat):
        plain.append(deliver(stream, False))
        timed.append(deliver(stream, True))
    for name, pick in (("min", min), ("median", statistics.median)):
        a, b = pick(plain), pick(timed)
        print(f"deliver 32 B to a Python handler ({name}): {a * 1e9:.1f} ns without, "
              f"{b * 1e9:.1f} ns with the handler timer: {(b - a) * 1e9:+.1f} ns per message "
              f"({(b / a - 1) * 100:+.1f} %)")

    subscribers = tuple(FrameEngine() for _ in range(1000))
    for engine in subscribers:
        engine.ready_state = 1
    plain, timed = [], []

    async def rounds() -> None:
        for _ in range(args.repeat):
            plain.append(await publish_cost(False, subscribers, 200))
            timed.append(await publish_cost(True, subscribers, 200))

    asyncio.run(rounds())
    for name, pick in (("min", min), ("median", statistics.median)):
        a, b = pick(plain), pick(timed)
        print(f"publish 32 B to 1,000 subscribers ({name}): {a * 1e6:.1f} us without, "
              f"{b * 1e6:.1f} us with the publish histogram: {(b - a) * 1e9:+.0f} ns per "
              f"publish ({(b / a - 1) * 100:+.2f} %)")


if __name__ == "__main__":
    main()
