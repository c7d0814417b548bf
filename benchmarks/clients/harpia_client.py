"""harpia's client: handlers called by the engine (the fast path), echo from ``message``.

``--busy-poll S`` keeps the loop polling S seconds after a read (the harpia-busypoll column)."""
from __future__ import annotations

import argparse

from common import COUNT, Scenario, Stop, run

import harpia


def echo(ws: harpia.ClientWebSocket, message: str | bytes) -> None:
    COUNT.n += 1
    ws.send(message)


def take(ws: harpia.ClientWebSocket, message: str | bytes) -> None:
    COUNT.n += 1


async def connect_and_close(url: str, args: argparse.Namespace) -> None:
    ws = await harpia.connect(url, busy_poll=args.busy_poll)
    ws.close()
    await ws.wait_closed()


async def start_load(url: str, scenario: Scenario, args: argparse.Namespace) -> Stop:
    handler = echo if scenario.inflight else take
    conns = [await harpia.connect(url, {"message": handler}, max_payload_length=1 << 24,
                                  busy_poll=args.busy_poll)
             for _ in range(scenario.conns)]
    payload = b"x" * scenario.size
    for ws in conns:
        for _ in range(scenario.inflight):
            ws.send(payload)

    async def stop() -> None:
        for ws in conns:
            ws.terminate()
    return stop


if __name__ == "__main__":
    run(connect_and_close, start_load)
