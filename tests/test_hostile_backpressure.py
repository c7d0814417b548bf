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
from wsclient import BINARY, RawClient

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
