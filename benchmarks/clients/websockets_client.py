"""websockets' asyncio client: ``async for`` over the connection, ``await send`` back."""
from __future__ import annotations

import argparse
import asyncio

from common import COUNT, Scenario, Stop, run
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed


async def echo(ws: ClientConnection, inflight: int, size: int) -> None:
    payload = b"x" * size
    try:
        for _ in range(inflight):
            await ws.send(payload)
        async for message in ws:
            COUNT.n += 1
            if inflight:
                await ws.send(message)
    except ConnectionClosed:
        pass


async def connect_and_close(url: str, args: argparse.Namespace) -> None:
    async with connect(url, compression=None):
        pass


async def start_load(url: str, scenario: Scenario, args: argparse.Namespace) -> Stop:
    conns = [await connect(url, compression=None, max_size=1 << 24) for _ in range(scenario.conns)]
    tasks = [asyncio.ensure_future(echo(ws, scenario.inflight, scenario.size)) for ws in conns]

    async def stop() -> None:
        for task in tasks:
            task.cancel()
        for ws in conns:
            ws.transport.abort()
    return stop


if __name__ == "__main__":
    run(connect_and_close, start_load)
