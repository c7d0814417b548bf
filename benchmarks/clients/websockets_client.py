"""websockets' asyncio client: ``async for`` over the connection, ``await send`` back."""
from __future__ import annotations

import asyncio

import uvloop
from common import SCENARIOS, Counter, measure, parse_args
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed


async def echo(ws: ClientConnection, inflight: int, size: int) -> None:
    payload = b"x" * size
    try:
        for _ in range(inflight):
            await ws.send(payload)
        async for message in ws:
            Counter.n += 1
            if inflight:
                await ws.send(message)
    except ConnectionClosed:
        pass


async def connect_loop(url: str, running: list[bool]) -> None:
    while running[0]:
        async with connect(url, compression=None):
            pass
        Counter.n += 1


async def main() -> None:
    args = parse_args()
    scenario = SCENARIOS[args.scenario]
    url = args.url + scenario.path
    if args.scenario == "connect":
        running = [True]
        tasks = [asyncio.ensure_future(connect_loop(url, running)) for _ in range(scenario.conns)]

        async def stop_connects() -> None:
            running[0] = False
            await asyncio.gather(*tasks)
        await measure(Counter, args.seconds, args.warmup, stop_connects)
        return
    conns = [await connect(url, compression=None, max_size=1 << 24) for _ in range(scenario.conns)]
    tasks = [asyncio.ensure_future(echo(ws, scenario.inflight, scenario.size)) for ws in conns]

    async def stop() -> None:
        for task in tasks:
            task.cancel()
        for ws in conns:
            ws.transport.abort()
    await measure(Counter, args.seconds, args.warmup, stop)


if __name__ == "__main__":
    uvloop.run(main())
