"""Hostile frames against a running server: huge announced lengths, fragment floods,
control-frame abuse, invalid UTF-8 across fragments, compression bombs.

Each gets its RFC 6455 close code, memory follows the bytes that really arrived (never a
length a header announces), and a well-behaved client connected at the same time loses
nothing (the bystander, see hardening.py).  Memory is measured on a server in a process of
its own (``ServerProcess``).
"""
from __future__ import annotations

import asyncio
import struct
import time
import zlib
from typing import Any

import pytest
from hardening import ECHO, MiB, ServerProcess
from wsclient import (BINARY, CLOSE, CONT, MASK, PING, PONG, TEXT, RawClient, client_frame,
                      close_payload)

import harpia
from harpia._frames import apply_mask


def header(opcode: int, length: int, *, fin: bool = True, rsv1: bool = False) -> bytes:
    """A masked client frame header announcing ``length`` bytes (64-bit form if asked)."""
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    if length < 126:
        return bytes([first, 0x80 | length]) + MASK
    if length < 65536:
        return bytes([first, 0x80 | 126]) + struct.pack("!H", length) + MASK
    return bytes([first, 0x80 | 127]) + struct.pack("!Q", length) + MASK


CASES = {
    # name: (bytes sent, close code expected)
    "length 2^63-1, header only": (header(BINARY, 2**63 - 1), 1009),
    "length with the top bit set": (bytes([0x82, 0xFF]) + b"\xff" * 8 + MASK, 1002),
    "16-bit length not minimal": (bytes([0x82, 0xFE, 0, 5]) + MASK + b"x" * 5, 1002),
    "ping over 125 bytes": (client_frame(PING, b"x" * 126), 1002),
    "fragmented ping": (client_frame(PING, b"x", fin=False), 1002),
    "continuation without a start": (client_frame(CONT, b"x"), 1002),
    "new message inside a fragmented one": (
        client_frame(TEXT, "a", fin=False) + client_frame(TEXT, "b"), 1002),
    "invalid UTF-8 split across fragments": (
        client_frame(TEXT, b"ok \xc3", fin=False) + client_frame(CONT, b"\x28"), 1007),
    "RSV1 without an extension": (header(TEXT, 2, rsv1=True) + b"hi", 1002),
    "close code 999": (client_frame(CLOSE, close_payload(999)), 1002),
    "close payload of 1 byte": (client_frame(CLOSE, b"\x03"), 1002),
    "close reason not UTF-8": (client_frame(CLOSE, b"\x03\xe8\xff"), 1007),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_hostile_frames_get_their_close_code(case: str, bystander: Any) -> None:
    data, code = CASES[case]
    closes: list[int] = []
    app = harpia.harpia()
    app.ws("/echo", ECHO)
    app.ws("/", {**ECHO, "close": lambda ws, code, reason: closes.append(code)})
    async with app.serve() as server, bystander(server.port):
        client = await RawClient.open(server.port, "/")
        try:
            await client.send(data)
            frame = await client.recv_close()
            assert frame.close_code == code
            await client.expect_eof()
        finally:
            client.close()
        while not closes:
            await asyncio.sleep(0.01)
        assert closes == [code]


async def test_fragments_past_the_limit_close_1009_at_the_fragment_that_crosses_it(
        bystander: Any) -> None:
    limit = 64 * 1024
    app = harpia.harpia()
    app.ws("/echo", ECHO)
    app.ws("/", ECHO, max_payload_length=limit)
    async with app.serve() as server, bystander(server.port):
        client = await RawClient.open(server.port, "/")
        try:
            one = client_frame(CONT, b"x", fin=False)
            await client.send(client_frame(BINARY, b"x", fin=False) + one * (limit - 1))
            await client.send_frame(PING, b"alive")           # exactly at the limit: fine
            frame = await client.recv_frame()
            assert (frame.opcode, frame.payload) == (PONG, b"alive")
            await client.send(one)
            assert (await client.recv_close()).close_code == 1009
            await client.expect_eof()
        finally:
            client.close()


# --------------------------------------------------------------------------- memory

async def test_headers_announcing_the_limit_cost_only_what_arrives(
        loop_kind: str, bystander: Any) -> None:
    """200 clients each announce a 16 MiB message (the default limit) and send 4 KiB of it:
    allocating per header would take 3.2 GB; the server holds what arrived."""
    async with ServerProcess(loop_kind, {"/": ("echo", {})}) as server, \
            bystander(server.port):
        clients = [await RawClient.open(server.port, "/") for _ in range(200)]
        before = server.reset_peak()
        try:
            start = header(BINARY, 16 * MiB) + b"\x00" * 4096
            await asyncio.gather(*(client.send(start) for client in clients))
            await asyncio.sleep(0.3)
            growth = server.peak() - before
            assert growth < 8 * MiB, f"RSS grew by {growth / MiB:.1f} MiB"
            # The limit is a real one: a message of exactly 16 MiB goes through...
            await clients[0].send(b"\x00" * (16 * MiB - 4096))
            assert await clients[0].recv_message() == MASK * (4 * MiB)    # zeros, unmasked
            # ...and one byte more is refused from the header alone.
            over = await RawClient.open(server.port, "/")
            clients.append(over)
            await over.send(header(BINARY, 16 * MiB + 1))
            assert (await over.recv_close()).close_code == 1009
        finally:
            for client in clients:
                client.close()


async def test_a_million_fragments_cost_constant_time_each_and_bounded_memory(
        loop_kind: str, bystander: Any) -> None:
    """A message in 1,000,000 one-byte fragments, and one padded with 1,000,000 empty
    ones: each is delivered whole; memory follows the message (about twice its size while
    it grows), not the number of fragments."""
    count = 1_000_000
    async with ServerProcess(loop_kind, {"/": ("echo", {})}) as server, \
            bystander(server.port, max_rtt=2.0):
        client = await RawClient.open(server.port, "/")
        try:
            empty = (client_frame(TEXT, "x", fin=False)
                     + client_frame(CONT, b"", fin=False) * count + client_frame(CONT, b""))
            before = server.reset_peak()
            started = time.monotonic()
            await client.send(empty)
            assert await client.recv_message(timeout=20) == "x"
            empty_seconds = time.monotonic() - started
            empty_growth = server.peak() - before

            ones = (client_frame(TEXT, "x", fin=False)
                    + client_frame(CONT, b"x", fin=False) * (count - 2) + client_frame(CONT, b"x"))
            before = server.reset_peak()
            started = time.monotonic()
            await client.send(ones)
            assert await client.recv_message(timeout=20) == "x" * count
            ones_seconds = time.monotonic() - started
            ones_growth = server.peak() - before
        finally:
            client.close()
    assert empty_growth < 2 * MiB, f"empty fragments: RSS grew by {empty_growth / MiB:.1f} MiB"
    assert ones_growth < 8 * MiB, f"1-byte fragments: RSS grew by {ones_growth / MiB:.1f} MiB"
    # Constant work per fragment: 6-7 MB of frames in well under the 20 s a quadratic
    # reassembly would need (measured: ~0.2 s each).
    assert empty_seconds < 5 and ones_seconds < 5, (empty_seconds, ones_seconds)


def deflate_bomb(size: int) -> bytes:
    """``size`` zero bytes compressed for permessage-deflate (raw deflate, without the
    final empty block's 00 00 ff ff, RFC 7692 section 7.2.1)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = bytes(MiB)
    data = b"".join(compressor.compress(block) for _ in range(size // MiB))
    data += compressor.flush(zlib.Z_SYNC_FLUSH)
    assert data.endswith(b"\x00\x00\xff\xff")
    return data[:-4]


async def test_a_compression_bomb_closes_1009_before_the_memory_is_spent(
        loop_kind: str, bystander: Any) -> None:
    """64 KB that inflate to 64 MiB, on a route whose limit is 1 MiB."""
    bomb = deflate_bomb(64 * MiB)
    routes = {"/": ("echo", {"per_message_deflate": True, "max_payload_length": MiB})}
    async with ServerProcess(loop_kind, routes) as server, bystander(server.port):
        client = await RawClient.connect(server.port)
        try:
            response = await client.handshake(
                "/", headers=[("Sec-WebSocket-Extensions", "permessage-deflate")])
            assert response.status == 101
            assert response.headers["sec-websocket-extensions"].startswith("permessage-deflate")
            before = server.reset_peak()
            await client.send(header(BINARY, len(bomb), rsv1=True) + mask(bomb))
            assert (await client.recv_close()).close_code == 1009
            await client.expect_eof()
            growth = server.peak() - before
            assert growth < 4 * MiB, f"RSS grew by {growth / MiB:.1f} MiB"
        finally:
            client.close()


def mask(payload: bytes) -> bytes:
    """``payload`` masked with MASK (what follows ``header``)."""
    return bytes(apply_mask(payload, MASK))
