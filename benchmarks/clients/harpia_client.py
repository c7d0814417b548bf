"""harpia's client: handlers called by the engine (the fast path), echo from ``message``.

``--busy-poll S`` keeps the loop polling S seconds after a read (the harpia-busypoll column)."""
from __future__ import annotations

import asyncio

import uvloop
from common import SCENARIOS, Counter, measure, parse_args

import harpia


def echo(ws: harpia.ClientWebSocket, message: str | bytes) -> None:
    Counter.n += 1
    ws.send(message)


def take(ws: harpia.ClientWebSocket, message: str | bytes) -> None:
    Counter.n += 1


async def connect_loop(url: str, running: list[bool], busy_poll: float) -> None:
    while running[0]:
        ws = await harpia.connect(url, busy_poll=busy_poll)
        ws.close()
        await ws.wait_closed()
        Counter.n += 1


async def main() -> None:
    args = parse_args()
    scenario = SCENARIOS[args.scenario]
    url = args.url + scenario.path
    if args.scenario == "connect":
        running = [True]
        tasks = [asyncio.ensure_future(connect_loop(url, running, args.busy_poll)) for _ in range(scenario.conns)]

        async def stop_connects() -> None:
            running[0] = False
            await asyncio.gather(*tasks)
        await measure(Counter, args.seconds, args.warmup, stop_connects)
        return
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
    await measure(Counter, args.seconds, args.warmup, stop)


if __name__ == "__main__":
    uvloop.run(main())
