"""Hostile readers against the backpressure limit of real apps: large messages to a client
that does not read yet (on every loop and Python version), and what a connection closed
for backpressure keeps.

Run on Python 3.12 and 3.13 too: their asyncio socket transport changed its write path
(``writelines`` queues without pausing the protocol before 3.12.9 / 3.13.2), which only a
test on those versions can catch.
"""
from __future__ import annotations

import asyncio
from typing import Any

from hardening import MiB, ServerProcess, wait_for
from wsclient import BINARY, RawClient, ws_connect

import harpia
from harpia import ServerWebSocket

BIG = 64 * 1024


async def test_large_sends_to_a_client_not_reading_yet_respect_the_limit() -> None:
    # An open handler that pushes 64 KiB messages (the size that goes to the transport
    # without a copy) to a client that has not started reading: the first crossing send
    # returns -1, the rest 0, and no more than the limit plus that message is held.
    results: list[int] = []
    held: list[int] = []
    drained = asyncio.Event()

    def open_(ws: ServerWebSocket[Any]) -> None:
        for i in range(401):
            results.append(ws.send(i.to_bytes(4, "big") * (BIG // 4)))
        held.append(ws.buffered_amount)
        held.append(ws.transport.get_write_buffer_size())

    app = harpia.harpia()
    app.ws("/", {"open": open_, "drain": lambda ws: drained.set()}, backpressure_limit=MiB)
    async with app.serve() as server:
        client = await RawClient.open(server.port, "/", rcvbuf=4096)
        try:
            await wait_for(lambda: len(held) == 2, 10, "the open handler")
            crossing = results.index(-1)
            assert 0 < crossing < 300, results  # the kernel takes a few MiB first
            assert all(r == BIG + 10 for r in results[:crossing]), results[:crossing]
            assert set(results[crossing + 1:]) == {0}, results
            assert held[0] <= MiB + BIG + 14, f"{held[0] / MiB:.1f} MiB held"
            assert held[1] <= MiB + BIG + 14, f"{held[1] / MiB:.1f} MiB in the transport"
            # Everything accepted arrives, in order, and drain comes once it has.
            for i in range(crossing + 1):
                frame = await client.recv_frame(timeout=10)
                assert frame.opcode == BINARY and frame.payload == i.to_bytes(4, "big") * (BIG // 4)
            await asyncio.wait_for(drained.wait(), 10)
        finally:
            client.close()


async def test_closing_for_backpressure_releases_the_queued_output_at_once(
        loop_kind: str, bystander: Any) -> None:
    # Subscribers that never read arrive one after another while a feed keeps publishing;
    # with close_on_backpressure_limit each is closed with 1013 as it crosses its limit
    # (1 MiB).  What it held must be freed then: kept until the close timeout (5 s), 40 of
    # them held 40 MiB together; freed at once, only the one filling up holds memory.
    routes = {"/": ("feed", {"close_on_backpressure_limit": True}),
              "/publish": ("publisher", {})}
    async with ServerProcess(loop_kind, routes) as server, bystander(server.port, max_rtt=2.0):
        slow: list[RawClient] = []
        try:
            before = server.reset_peak()
            async with ws_connect(server.port, "/publish") as publisher:
                for i in range(40):
                    slow.append(await RawClient.open(server.port, "/", rcvbuf=4096))
                    await publisher.send("publish 6000 1024")      # 6 MiB: past the limit and the kernel
                    assert await asyncio.wait_for(publisher.recv(), 30) == "published"
            growth = server.peak() - before
            await wait_for(lambda: _closed_1013(server, 40), 10, "every subscriber closed 1013")
        finally:
            for client in slow:
                client.close()
    print(f"peak RSS growth {growth / MiB:.1f} MiB")
    assert growth < 12 * MiB, f"RSS grew by {growth / MiB:.1f} MiB (40 x the limit: 40 MiB)"


async def _closed_1013(server: ServerProcess, count: int) -> bool:
    stats = await server.stats()
    # Only the bystander's connection is left.
    return stats["closes_by_code"].get("1013", 0) == count and stats["live"] == 1
