"""Hostile clients against permessage-deflate: compressed messages that inflate a
thousandfold, streamed as fast as the client can, while others are served.

The server runs in a process of its own (its loop's responsiveness is the point) while a
well-behaved client keeps echoing on the same server.
"""
from __future__ import annotations

import asyncio
import struct
import time
import zlib
from typing import Any

import pytest
from hardening import MiB, ServerProcess, push
from wsclient import CLOSE, RawClient, ws_connect

DEFLATE = [("Sec-WebSocket-Extensions",
            "permessage-deflate; client_no_context_takeover; server_no_context_takeover")]


def compressed_frame(payload: bytes, *, opcode: int = 2, fin: bool = True,
                     rsv1: bool = True) -> bytes:
    """A masked client frame (key 0: the payload goes as it is) with RSV1 set."""
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", b0, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", b0, 0x80 | 127, n)
    return head + b"\0\0\0\0" + payload


def deflated(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-15)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


#: ~16 KB on the wire, just under 16 MiB (the default max_payload_length) inflated.
BOMB = compressed_frame(deflated(bytes(16 * MiB - 1)))


@pytest.mark.timeout(120)
async def test_inflating_a_stream_of_bombs_does_not_starve_the_others(
        loop_kind: str, bystander: Any) -> None:
    # Before: 8 MiB of such frames cost the server ~10 s of CPU in a few loop passes; the
    # bystander got one echo and then nothing for 10 s, a new client waited as long for
    # its 101.  Now inflating counts toward the per-read fairness yield, in bytes.
    routes = {"/echo": ("echo", {"per_message_deflate": True}),
              "/sink": ("sink", {"per_message_deflate": True})}
    async with ServerProcess(loop_kind, routes) as server, \
            bystander(server.port, every=0.005, max_rtt=4.0) as b:
        attacker = await RawClient.open(server.port, "/sink", headers=DEFLATE)
        try:
            flood = asyncio.ensure_future(push(attacker.sock, BOMB * 32, 8 * MiB, stall=20))
            await asyncio.sleep(1.0)
            started = time.perf_counter()
            async with ws_connect(server.port, "/echo") as newcomer:   # a new client gets in
                await newcomer.send("hello")
                assert await newcomer.recv() == "hello"
            newcomer_time = time.perf_counter() - started
            sent = await asyncio.wait_for(flood, 100)
        finally:
            attacker.close()
        assert sent > 2 * MiB
    ordered = sorted(b.rtts)
    p99 = ordered[int(len(ordered) * 0.99)]
    print(f"bystander p99 {p99 * 1000:.1f} ms over {len(ordered)} echoes, "
          f"newcomer {newcomer_time * 1000:.0f} ms, attacker sent {sent / MiB:.1f} MiB")
    assert newcomer_time < 3.0         # before: its handshake timed out (5 s here)


async def test_a_fragmented_compressed_message_over_the_limit_is_closed_1009(
        loop_kind: str) -> None:
    routes = {"/sink": ("sink", {"per_message_deflate": True, "max_payload_length": MiB})}
    async with ServerProcess(loop_kind, routes) as server:
        client = await RawClient.open(server.port, "/sink", headers=DEFLATE)
        try:
            compressor = zlib.compressobj(wbits=-15)
            fragments = [compressed_frame(compressor.compress(bytes(256 * 1024))
                                          + compressor.flush(zlib.Z_SYNC_FLUSH),
                                          opcode=2 if i == 0 else 0, fin=False, rsv1=i == 0)
                         for i in range(8)]                        # 2 MiB inflated in all
            for fragment in fragments:
                try:
                    await client.send(fragment)
                except OSError:
                    break                      # the server hung up after its close frame
            frame = await client.recv_frame(timeout=10)
            assert frame.opcode == CLOSE and frame.close_code == 1009, frame
        finally:
            client.close()
