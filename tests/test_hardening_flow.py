"""Slow consumers, floods and liveness against a running server: clients that never read
(echo requests, pings, publishes), floods faster than an async handler, routes without a
message handler, idle and half-closed clients, and fairness between connections.

What must hold: reading from a client stops instead of buffering for it without bound (the
server's memory, measured on a server in a process of its own, grows by about the limits
and not by what the client sends), timeouts close with the documented code, and a
well-behaved client connected at the same time loses nothing and is not starved (the
bystander, see hardening.py).
"""
from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

from hardening import ECHO, MiB, ServerProcess, push, wait_for
from wsclient import (CLOSE, PING, PONG, TEXT, Mailbox, RawClient, client_frame,
                      upgrade_request, ws_connect)

import harpia
from harpia import ServerWebSocket

PINGS = b"".join(client_frame(PING, f"{i:04d}".encode() + b"p" * 121) for i in range(1000))
PING_SIZE = len(PINGS) // 1000                           # 131 bytes on the wire each


def requests(size: int, count: int = 256) -> bytes:
    """``count`` text messages of ``size`` bytes: what a client floods with."""
    return client_frame(TEXT, "r" * size) * count


# --------------------------------------------------------------------------- never reading

async def test_a_ping_flood_from_a_client_that_never_reads_pauses_it(bystander: Any) -> None:
    """Automatic pongs count against the backpressure limit like sends: over it, the
    server stops reading (aiohttp's model), and still owes nothing: once the client reads,
    every ping it sent is answered, in order."""
    opened: asyncio.Queue[ServerWebSocket[Any]] = asyncio.Queue()
    limit = 64 * 1024
    app = harpia.harpia()
    app.ws("/echo", ECHO)
    app.ws("/", {"open": opened.put_nowait}, backpressure_limit=limit)
    async with app.serve() as server, bystander(server.port):
        client = await RawClient.open(server.port, "/", rcvbuf=4096)
        try:
            ws = await opened.get()
            sent = await push(client.sock, PINGS, 64 * MiB, stall=0.3)
            assert sent < 16 * MiB, "the server kept reading from a client that never reads"
            assert ws.reading_paused
            assert limit < ws.buffered_amount <= limit + PING_SIZE
            assert ws.dropped == 0
            for i in range(sent // PING_SIZE):                 # the complete pings
                frame = await client.recv_frame()
                assert (frame.opcode, frame.payload[:4]) == (PONG, b"%04d" % (i % 1000))
        finally:
            client.close()


async def test_a_ping_flood_from_a_non_reader_costs_the_server_no_memory(
        loop_kind: str, bystander: Any) -> None:
    """50 MiB of pings on the defaults (websockets and picows would queue 50 MiB of pongs)."""
    async with ServerProcess(loop_kind, {"/": ("sink", {})}) as server, bystander(server.port):
        client = await RawClient.open(server.port, "/")
        before = server.reset_peak()
        try:
            sent = await push(client.sock, PINGS, 50 * MiB)
            growth = server.peak() - before
        finally:
            client.close()
        assert sent < 50 * MiB
        assert growth < 4 * MiB, f"RSS grew by {growth / MiB:.1f} MiB"
        assert (await server.stats())["dropped"] == 0


async def test_a_slow_reader_on_the_defaults_pins_about_the_backpressure_limit(
        loop_kind: str, bystander: Any) -> None:
    """256 MiB of echo requests from a client that reads nothing: the server holds its
    1 MiB of replies and a read buffer, stops reading, and drops no reply."""
    async with ServerProcess(loop_kind, {"/": ("echo", {})}) as server, \
            bystander(server.port):
        client = await RawClient.open(server.port, "/")
        before = server.reset_peak()
        try:
            sent = await push(client.sock, requests(1024), 256 * MiB)
            growth = server.peak() - before
        finally:
            client.close()
        assert sent < 64 * MiB
        assert growth < 4 * MiB, f"RSS grew by {growth / MiB:.1f} MiB"
        assert (await server.stats())["dropped"] == 0


async def test_a_flood_faster_than_an_async_handler_is_paused_not_buffered(
        loop_kind: str, bystander: Any) -> None:
    """Messages arrive faster than an ``async def`` handler (10 ms each) takes them: the
    server holds ``max_inbound_backlog`` (64 KiB) and one read, then stops reading."""
    async with ServerProcess(loop_kind, {"/": ("slow", {})}) as server, \
            bystander(server.port):
        client = await RawClient.open(server.port, "/")
        before = server.reset_peak()
        try:
            sent = await push(client.sock, requests(1024), 64 * MiB)
            growth = server.peak() - before
        finally:
            client.close()
        assert sent < 32 * MiB
        assert growth < 4 * MiB, f"RSS grew by {growth / MiB:.1f} MiB"


async def test_messages_to_a_route_without_a_message_handler_are_not_kept(
        loop_kind: str, bystander: Any) -> None:
    async with ServerProcess(loop_kind, {"/": ("sink", {})}) as server, \
            bystander(server.port):
        client = await RawClient.open(server.port, "/")
        before = server.reset_peak()
        try:
            chunk = requests(100, 1000)
            sent = await push(client.sock, chunk, 600 * len(chunk))     # 64 MB, whole frames
            await client.send_frame(PING, b"done")       # everything before it was parsed
            assert (await client.recv_frame()).payload == b"done"
            growth = server.peak() - before
        finally:
            client.close()
        assert sent == 600 * len(chunk)
        assert growth < 2 * MiB, f"RSS grew by {growth / MiB:.1f} MiB"


# --------------------------------------------------------------------------- publish

async def test_publishing_to_subscribers_that_never_read_skips_them_and_counts(
        loop_kind: str, bystander: Any) -> None:
    """20 subscribers that never read, 32 MiB published to each: each holds at most its
    limit (256 KiB here); the rest is dropped for it and counted."""
    routes = {"/": ("feed", {"backpressure_limit": 256 * 1024}), "/publish": ("publisher", {})}
    async with ServerProcess(loop_kind, routes) as server, bystander(server.port):
        slow = [await RawClient.open(server.port, "/", rcvbuf=4096) for _ in range(20)]
        try:
            before = server.reset_peak()
            async with ws_connect(server.port, "/publish") as publisher:
                await publisher.send("publish 2048 16384")
                assert await asyncio.wait_for(publisher.recv(), 10) == "published"
            growth = server.peak() - before
            stats = await server.stats()
        finally:
            for client in slow:
                client.close()
        assert growth < 12 * MiB, f"RSS grew by {growth / MiB:.1f} MiB"
        assert stats["dropped"] > 20 * 1024               # most of 20 x 2048 messages


async def test_publish_with_close_on_backpressure_limit_closes_slow_subscribers_1013(
        bystander: Any) -> None:
    opened: asyncio.Queue[ServerWebSocket[Any]] = asyncio.Queue()
    mailbox = Mailbox()
    app = harpia.harpia()
    app.ws("/echo", ECHO)
    def subscribe(ws: ServerWebSocket[Any]) -> None:
        ws.subscribe("feed")
        opened.put_nowait(ws)

    app.ws("/feed", {"open": subscribe,
                     "close": lambda ws, code, reason: mailbox.put("close", code)},
           backpressure_limit=32 * 1024, close_on_backpressure_limit=True)
    body = "m" * 4000
    async with app.serve() as server, bystander(server.port):
        slow = [await RawClient.open(server.port, "/feed", rcvbuf=4096) for _ in range(3)]
        try:
            async with ws_connect(server.port, "/feed", max_queue=None) as fast:
                for _ in range(4):
                    await opened.get()
                taken = []
                for i in range(2000):
                    taken.append(app.publish("feed", f"{i:06d}{body}"))
                    if i % 4 == 3:
                        await asyncio.sleep(0)         # a producer that lets the loop run
                for i in range(2000):
                    assert await fast.recv() == f"{i:06d}{body}"
                assert taken[0] == 4 and taken[-1] == 1
            codes = sorted([(await mailbox.get())[1] for _ in range(4)])
            for client in slow:
                # Closed for backpressure: the connection is dropped at once with what was
                # queued for it; what did arrive is an ordered prefix, without a gap.
                await client.expect_eof()
                count = 0
                while len(client.buffer) >= 4 + 6 + len(body):
                    frame = await client.recv_frame()
                    if frame.opcode == CLOSE:
                        assert frame.close_code == 1013
                        break
                    assert frame.payload.decode() == f"{count:06d}{body}"   # no gap
                    count += 1
                assert count < 2000
            assert codes == [1000, 1013, 1013, 1013]              # the fast one closed itself
        finally:
            for client in slow:
                client.close()


# --------------------------------------------------------------------------- timeouts

async def test_an_idle_client_is_pinged_then_closed_with_1001(bystander: Any) -> None:
    """As Bun: with ``send_pings`` a quiet client gets a ping at half the idle timeout; one
    that does not answer is closed with 1001 at the timeout."""
    app = harpia.harpia()
    app.ws("/echo", ECHO)
    app.ws("/", {}, idle_timeout=0.4)
    async with app.serve() as server, bystander(server.port):
        client = await RawClient.open(server.port, "/")
        started = time.monotonic()
        try:
            ping = await client.recv_frame()
            pinged = time.monotonic() - started
            close = await client.recv_frame()
            closed = time.monotonic() - started
            assert (ping.opcode, close.opcode, close.close_code) == (PING, CLOSE, 1001)
            assert 0.15 < pinged < closed - 0.1 and 0.35 < closed < 1.5, (pinged, closed)
        finally:
            client.close()


async def test_a_client_that_never_answers_our_close_is_dropped_after_close_timeout(
        bystander: Any) -> None:
    mailbox = Mailbox()
    app = harpia.harpia(close_timeout=0.3)
    app.ws("/echo", ECHO)
    app.ws("/", {"message": lambda ws, message: ws.close(4000, "bye"),
                 "close": lambda ws, code, reason: mailbox.put("close", code, reason)})
    async with app.serve() as server, bystander(server.port):
        client = await RawClient.open(server.port, "/")
        try:
            await client.send_text("close me")
            assert (await client.recv_close()).close_code == 4000
            started = time.monotonic()
            await client.expect_eof()                    # we neither answer nor hang up
            assert 0.25 < time.monotonic() - started < 1.0
            assert await mailbox.get() == ("close", 4000, "bye")
            assert await mailbox.quiet(0.1) == []
        finally:
            client.close()


# --------------------------------------------------------------------------- fairness

class Flooder:
    """A client in two threads of this process (off the event loops): one writes tiny
    text frames as fast as the kernel takes them, the other reads and discards."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.settimeout(5)
        self.sock.sendall(upgrade_request("/"))
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 101"), head
        self.blob = client_frame(TEXT, "ab") * 65536         # 8 bytes a message
        self.running = True
        self.sent = 0
        self.threads = [threading.Thread(target=self._write), threading.Thread(target=self._read)]
        for thread in self.threads:
            thread.start()

    def _write(self) -> None:
        while self.running:
            try:
                self.sock.sendall(self.blob)
            except OSError:
                return
            self.sent += len(self.blob)

    def _read(self) -> None:
        while self.running:
            try:
                if not self.sock.recv(1 << 20):
                    return
            except OSError:
                return

    def stop(self) -> None:
        self.running = False
        self.sock.shutdown(socket.SHUT_RDWR)
        for thread in self.threads:
            thread.join(10)
        self.sock.close()


async def test_a_client_streaming_tiny_frames_does_not_starve_the_others(
        loop_kind: str, bystander: Any) -> None:
    """One connection sends 8-byte messages as fast as it can (an echo route answers each);
    another one's echo must still come back within a few loop passes.  The work done for
    one connection per pass is bounded by one socket read (256 KiB: ~30,000 messages):
    asyncio's selector loop reads each ready socket once per pass, but libuv (uvloop) reads
    a socket up to 32 times in one pass while the kernel keeps it full, unless the engine
    stops reading after a large read and resumes on the next pass."""
    async with ServerProcess(loop_kind, {"/": ("echo", {})}) as server:
        async with bystander(server.port, every=0.005, max_rtt=2.0) as calm:
            flooder = await asyncio.to_thread(Flooder, server.port)
            try:
                await asyncio.sleep(0.3)                 # the flood is at full speed
                calm.rtts.clear()
                await asyncio.sleep(1.5)
            finally:
                await asyncio.to_thread(flooder.stop)
        assert flooder.sent > 16 * MiB                   # it did flood (~2 M messages)
        assert calm.median_rtt() < 0.06, f"median echo {calm.median_rtt() * 1000:.0f} ms"


async def test_a_flood_behind_the_request_waits_for_an_async_open_handler(
        bystander: Any) -> None:
    """Frames sent right behind the upgrade request, while an ``async def open`` still runs:
    held up to ``max_inbound_backlog`` plus one read, then reading stops."""
    gate = asyncio.Event()
    holder: list[ServerWebSocket[Any]] = []
    received: list[str | bytes] = []

    async def open_(ws: ServerWebSocket[Any]) -> None:
        holder.append(ws)
        await gate.wait()

    app = harpia.harpia()
    app.ws("/echo", ECHO)
    app.ws("/", {"open": open_, "message": lambda ws, m: received.append(m)},
           max_inbound_backlog=4096)
    flood = requests(1000, 8192)                          # 8 MB
    async with app.serve() as server, bystander(server.port):
        client = await RawClient.connect(server.port)
        try:
            sending = asyncio.ensure_future(client.send(upgrade_request("/") + flood))
            await wait_for(lambda: holder, what="the open handler")
            await asyncio.sleep(0.3)
            ws = holder[0]
            assert not sending.done(), "the server read 8 MB while open was running"
            assert ws.reading_paused
            assert ws.held_bytes <= 4096 + 256 * 1024
            gate.set()
            await asyncio.wait_for(sending, 10)
            await wait_for(lambda: len(received) == 8192, what="every message")
        finally:
            client.close()


async def test_a_client_that_closes_but_never_reads_is_dropped_after_close_timeout(
        bystander: Any) -> None:
    """The client sends a request with a large answer, then its close frame, and reads
    nothing: our close echo sits behind the answer it never reads.  The connection must not
    stay half-closed, holding its buffers, for as long as the client likes."""
    mailbox = Mailbox()
    app = harpia.harpia(close_timeout=0.3)
    app.ws("/echo", ECHO)
    app.ws("/", {**ECHO, "close": lambda ws, code, reason: mailbox.put("close", code)},
           backpressure_limit=16 * MiB)
    async with app.serve() as server, bystander(server.port):
        client = await RawClient.open(server.port, "/", rcvbuf=4096)
        try:
            await client.send(client_frame(TEXT, "a" * 1024 * 1024) * 8)
            await client.send_close(1000)
            started = time.monotonic()
            assert await mailbox.get(timeout=3) == ("close", 1000)
            assert time.monotonic() - started < 1.0
            assert server.open_connections() == 1              # the bystander
        finally:
            client.close()
