"""Outbound backpressure over real sockets, against a raw client that stops reading.

The contract (Bun's and uWebSockets'): ``send`` returns the bytes queued, ``-1`` once for
the message that takes the buffer past ``backpressure_limit`` (it is still queued), then
``0`` (dropped, counted in ``dropped``) while the buffer stays over it; ``drain`` fires once
the client has read enough; nothing accepted is lost or reordered; the server stops reading
from a client it cannot write to; ``close_on_backpressure_limit`` closes with 1013.

The limit here (32 KiB) is below asyncio's default write-buffer high-water mark (64 KiB), so
these tests also check that the transport's own buffer counts against the limit.
"""
from __future__ import annotations

import asyncio
import socket
from typing import Any

from wsclient import CLOSE, TEXT, Mailbox, RawClient, client_frame, ws_connect

import harpia
from harpia import ServerWebSocket

LIMIT = 32 * 1024
BODY = "x" * 4000
FRAME = 4 + 6 + len(BODY)          # 16-bit length header + "%06d" + body


def message_for(i: int) -> str:
    return f"{i:06d}{BODY}"


async def fill(ws: ServerWebSocket[Any], extra_drops: int = 3) -> tuple[list[int], int]:
    """Send numbered messages until one returns -1, then ``extra_drops`` more.

    Yields to the loop every few sends, as a real producer does, so the transport hands
    what it can to the kernel.  Returns the results and the highest buffered amount seen.
    """
    results: list[int] = []
    highest = 0
    for i in range(10_000):
        result = ws.send(message_for(i))
        results.append(result)
        highest = max(highest, ws.buffered_amount)
        if result == -1:
            break
        if i % 8 == 7:
            await asyncio.sleep(0)             # the loop turn ends: queued frames are written
            highest = max(highest, ws.buffered_amount)
    assert results[-1] == -1, "the buffer never went over the limit"
    for i in range(extra_drops):
        results.append(ws.send(message_for(len(results))))
        highest = max(highest, ws.buffered_amount)
    return results, highest


async def read_messages(client: RawClient, count: int) -> list[int]:
    numbers = []
    while len(numbers) < count:
        frame = await client.recv_frame()
        assert frame.opcode == TEXT and frame.fin
        assert frame.payload[6:] == BODY.encode()
        numbers.append(int(frame.payload[:6]))
    return numbers


async def slow_reader(server: harpia.Listener,
                      opened: asyncio.Queue[ServerWebSocket[Any]]) -> tuple[RawClient, Any]:
    # A small receive buffer (set before connecting): the kernel absorbs less.
    client = await RawClient.open(server.port, "/", rcvbuf=4096)
    ws = await asyncio.wait_for(opened.get(), 5)
    return client, ws


def counting_drains() -> tuple[harpia.App, asyncio.Queue[ServerWebSocket[Any]], list[int]]:
    """An app whose route queues every opened connection and counts its drains."""
    drains: list[int] = []
    opened: asyncio.Queue[ServerWebSocket[Any]] = asyncio.Queue()
    app = harpia.harpia()
    app.ws("/", {"open": opened.put_nowait, "drain": lambda ws: drains.append(1)},
           backpressure_limit=LIMIT)
    return app, opened, drains


async def test_send_returns_n_then_minus_one_then_zero_and_drain_fires_once() -> None:
    mailbox = Mailbox()
    opened: asyncio.Queue[ServerWebSocket[Any]] = asyncio.Queue()
    app = harpia.harpia()
    app.ws("/", {
        "open": opened.put_nowait,
        "drain": lambda ws: mailbox.put("drain", ws.buffered_amount, ws.reading_paused),
        "message": lambda ws, message: mailbox.put("message", message),
    }, backpressure_limit=LIMIT)
    async with app.serve() as server:
        client, ws = await slow_reader(server, opened)
        try:
            results, highest = await fill(ws)
            accepted = len(results) - 3
            assert all(r == FRAME for r in results[:accepted - 1])
            assert results[accepted - 1:] == [-1, 0, 0, 0]
            assert ws.dropped == 3
            # Over the limit, but by no more than the message that crossed it.
            assert LIMIT < ws.buffered_amount <= LIMIT + FRAME
            assert highest <= LIMIT + FRAME
            # While over the limit the server reads nothing from this client.
            assert ws.reading_paused
            await client.send_text("sent while paused")
            assert await mailbox.quiet(0.2) == []

            numbers = await read_messages(client, accepted)
            assert numbers == list(range(accepted))        # all of them, in order
            drain = await mailbox.get()
            assert drain[0] == "drain" and drain[1] <= LIMIT // 4 and drain[2] is False
            assert await mailbox.get() == ("message", "sent while paused")
            assert ws.send("after drain") > 0
            frame = await client.recv_frame()
            assert frame.payload == b"after drain"
            assert await mailbox.quiet(0.1) == []              # drain fired once
            assert len(mailbox.kinds("drain")) == 1
        finally:
            client.close()


async def test_second_round_gets_minus_one_and_drain_again() -> None:
    app, opened, drains = counting_drains()
    async with app.serve() as server:
        client, ws = await slow_reader(server, opened)
        try:
            for round_ in (1, 2):
                results, _ = await fill(ws, extra_drops=1)
                assert results[-2:] == [-1, 0]
                await read_messages(client, len(results) - 1)
                for _ in range(100):
                    if len(drains) == round_:
                        break
                    await asyncio.sleep(0.01)
                assert len(drains) == round_
            assert ws.dropped == 2
        finally:
            client.close()


async def test_no_drop_without_minus_one_when_the_transport_already_holds_bytes() -> None:
    """The transport keeps a few bytes the kernel would not take; then one loop turn
    queues a burst that fits the limit only if those bytes are not counted.  Either the
    burst crosses the limit with a -1 or it is all accepted, but a 0 must never come
    without a -1 before it, else ``drain`` never fires and a producer waits forever."""
    app, opened, drains = counting_drains()
    async with app.serve() as server:
        client, ws = await slow_reader(server, opened)
        try:
            sent = 0
            # One message per loop turn until the kernel is full and something stays behind.
            while ws.buffered_amount <= 1000:
                assert ws.send(message_for(sent)) > 0
                sent += 1
                await asyncio.sleep(0)
            results = [ws.send(message_for(sent + i)) for i in range(8)]   # 32 KB, one turn
            await asyncio.sleep(0)
            results += [ws.send(message_for(sent + 8 + i)) for i in range(2)]
            assert -1 in results, results
            first_drop = results.index(0) if 0 in results else len(results)
            assert results.index(-1) < first_drop, results
            assert ws.buffered_amount <= LIMIT + FRAME
            accepted = sent + results.index(-1) + 1
            assert await read_messages(client, accepted) == list(range(accepted))
            for _ in range(100):
                if drains:
                    break
                await asyncio.sleep(0.01)
            assert drains == [1]
        finally:
            client.close()


async def test_close_on_backpressure_limit_closes_with_1013() -> None:
    mailbox = Mailbox()
    opened: asyncio.Queue[ServerWebSocket[Any]] = asyncio.Queue()
    app = harpia.harpia()
    app.ws("/", {"open": opened.put_nowait,
                 "drain": lambda ws: mailbox.put("drain"),
                 "close": lambda ws, code, reason: mailbox.put("close", code, reason)},
           backpressure_limit=LIMIT, close_on_backpressure_limit=True)
    async with app.serve() as server:
        client, ws = await slow_reader(server, opened)
        try:
            results, _ = await fill(ws, extra_drops=1)
            assert results[-2:] == [-1, 0]
            assert ws.readyState == harpia.CLOSING
            # The client does not read: what was queued for it is dropped with the
            # connection at once (not held for the close timeout).  What did reach it
            # is an ordered prefix of what was accepted.
            assert await mailbox.get() == ("close", 1013, "backpressure limit exceeded")
            await client.expect_eof()
            count = 0
            while len(client.buffer) >= FRAME:
                frame = await client.recv_frame()
                if frame.opcode == CLOSE:
                    assert frame.close_code == 1013
                    break
                assert int(frame.payload[:6]) == count
                count += 1
            assert count < len(results) - 1
            assert mailbox.kinds("drain") == []
        finally:
            client.close()


async def test_a_slow_subscriber_does_not_hold_back_the_others() -> None:
    opened: asyncio.Queue[ServerWebSocket[Any]] = asyncio.Queue()
    app = harpia.harpia()
    app.ws("/", {"open": lambda ws: (ws.subscribe("feed"), opened.put_nowait(ws))},
           backpressure_limit=LIMIT)
    async with app.serve() as server:
        slow, slow_ws = await slow_reader(server, opened)
        try:
            async with ws_connect(server.port, max_queue=None) as fast:
                await opened.get()
                taken = []
                for i in range(1000):
                    taken.append(app.publish("feed", message_for(i)))
                    if i % 8 == 7:
                        await asyncio.sleep(0)
                # Both took the first ones; then only the fast one.
                assert taken[0] == 2 and taken[-1] == 1
                assert slow_ws.dropped == taken.count(1)
                for i in range(1000):
                    assert await fast.recv() == message_for(i)
                numbers = await read_messages(slow, taken.count(2))
                assert numbers == list(range(taken.count(2)))
        finally:
            slow.close()


async def test_a_slow_reader_never_makes_an_echo_handler_drop() -> None:
    """Reading stops while over the limit: requests wait in the client's socket instead
    of being answered with drops."""
    results: list[int] = []

    def echo(ws: ServerWebSocket[Any], message: str | bytes) -> None:
        results.append(ws.send(message))

    app = harpia.harpia()
    app.ws("/", {"message": echo}, backpressure_limit=LIMIT)
    count = 1500
    async with app.serve() as server:
        client = await RawClient.open(server.port, "/", rcvbuf=4096)
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        try:
            blob = b"".join(
client_frame(TEXT, message_for(i)) for i in range(count))
            sending = asyncio.ensure_future(client.send(blob))
            await asyncio.sleep(0.3)                 # the client writes but does not read
            assert results.count(0) == 0, f"{results.count(0)} of {len(results)} answers dropped"
            numbers = await read_messages(client, count)
            await asyncio.wait_for(sending, 5)
            assert numbers == list(range(count))
            assert 0 not in results
        finally:
            client.close()
