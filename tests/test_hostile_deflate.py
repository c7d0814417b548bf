"""Hostile clients against permessage-deflate: compressed messages that inflate a
thousandfold, streamed as fast as the client can, while others are served.

The server runs in a process of its own (its loop's responsiveness is the point) while a
well-behaved client keeps echoing on the same server.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
from hardening import MiB, ServerProcess, push
from wsclient import CLOSE, PING, PONG, RawClient, ws_connect

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
#: ~1 KB on the wire, just under 1 MiB inflated: under the floor of max_compression_ratio,
#: so the defaults let a stream of these through (only fairness bounds what they cost).
SMALL_BOMB = compressed_frame(deflated(bytes(MiB - 1)))


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("bomb", ["16 MiB, ratio cap off", "1 MiB, defaults"])
async def test_inflating_a_stream_of_bombs_does_not_starve_the_others(
        loop_kind: str, bystander: Any, bomb: str) -> None:
    # Before: 8 MiB of such frames cost the server ~10 s of CPU in a few loop passes; the
    # bystander got one echo and then nothing for 10 s, a new client waited as long for
    # its 101.  Then inflated bytes counted toward the per-read yield, but a frame was
    # inflated whole: p99 270 ms, a newcomer waited 0.9 s.  Now inflating stops inside a
    # frame after 256 KiB per loop turn.  The ratio cap is off for the 16 MiB bombs (it
    # would end the attack at the first frame, see below): this is what fairness alone
    # gives.  Bombs under 1 MiB pass the ratio cap: the defaults rely on fairness there.
    options: dict[str, Any] = {"per_message_deflate": True}
    if bomb.startswith("16"):
        options["max_compression_ratio"] = None
    frames = BOMB * 32 if bomb.startswith("16") else SMALL_BOMB * 512
    routes = {"/echo": ("echo", options), "/sink": ("sink", options)}
    async with ServerProcess(loop_kind, routes) as server, \
            bystander(server.port, every=0.005, max_rtt=4.0) as b:
        await asyncio.sleep(0.5)
        quiet = len(b.rtts)
        attacker = await RawClient.open(server.port, "/sink", headers=DEFLATE)
        assert server.proc is not None
        cpu_before, wall_before = cpu_seconds(server.proc.pid), time.perf_counter()
        try:
            flood = asyncio.ensure_future(push(attacker.sock, frames, 4 * MiB, stall=20))
            await asyncio.sleep(1.0)
            started = time.perf_counter()
            async with ws_connect(server.port, "/echo") as newcomer:   # a new client gets in
                await newcomer.send("hello")
                assert await newcomer.recv() == "hello"
            newcomer_time = time.perf_counter() - started
            sent = await asyncio.wait_for(flood, 100)
            cpu = (cpu_seconds(server.proc.pid) - cpu_before) / (time.perf_counter() - wall_before)
        finally:
            attacker.close()
        during = b.rtts[quiet:]
        assert sent > 2 * MiB
    print(f"{bomb}: bystander p99 {p99(during) * 1000:.1f} ms, median "
          f"{sorted(during)[len(during) // 2] * 1000:.1f} ms over {len(during)} echoes, "
          f"newcomer {newcomer_time * 1000:.0f} ms, attacker sent {sent / MiB:.1f} MiB, "
          f"server CPU {cpu:.2f} s/s")
    assert len(during) >= 50
    # Measured at load ~5 on 2 cores: p99 6-23 ms (median 1-6 ms), newcomer 4-49 ms;
    # inflating whole frames: p99 124-257 ms (median 64-140 ms), newcomer 0.27-0.63 s.
    # The target is a p99 under 50 ms.  On a shared machine the p99 also catches the
    # scheduler (163 ms once, with the server at 0.17 s/s of CPU, i.e. mostly idle), so
    # the median is what must not move, and the tail is only bounded loosely.
    assert sorted(during)[len(during) // 2] < 0.03
    assert p99(during) < 0.5
    assert newcomer_time < 0.5


@pytest.mark.timeout(120)
async def test_with_the_defaults_a_bomb_is_closed_at_its_compression_ratio(
        loop_kind: str, bystander: Any) -> None:
    # max_compression_ratio (100 by default) stops a message that inflates past 100 times
    # its compressed size once it is over 1 MiB: the attacker's first bomb ends its
    # connection with 1009 after ~1 MiB of zlib, where it cost ~16 MiB per 16 KB frame.
    routes = {"/sink": ("sink", {"per_message_deflate": True})}
    async with ServerProcess(loop_kind, routes) as server, \
            bystander(server.port, every=0.005, max_rtt=4.0) as b:
        assert server.proc is not None
        cpu_before = cpu_seconds(server.proc.pid)
        started = time.perf_counter()
        for _ in range(20):             # it comes back, again and again
            attacker = await RawClient.open(server.port, "/sink", headers=DEFLATE)
            try:
                with contextlib.suppress(OSError):
                    await attacker.send(BOMB * 4)
                frame = await attacker.recv_frame(timeout=10)
            finally:
                attacker.close()
            assert frame.opcode == CLOSE and frame.close_code == 1009, frame
            assert frame.close_reason.startswith("compression ratio over 100:1"), frame
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(server.proc.pid) - cpu_before
    print(f"20 bombs: server CPU {cpu * 1000:.0f} ms in {elapsed:.2f} s, "
          f"bystander p99 {p99(b.rtts) * 1000:.1f} ms")
    # Inflated whole, 20 x 4 bombs are ~1.3 GB of zlib (seconds of CPU).
    assert cpu < 2.0
    assert p99(b.rtts) < 0.1


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


async def test_max_inflated_length_bounds_compressed_messages_below_max_payload_length(
        loop_kind: str) -> None:
    routes = {"/small": ("sink", {"per_message_deflate": True, "max_inflated_length": 65536})}
    async with ServerProcess(loop_kind, routes) as server:
        client = await RawClient.open(server.port, "/small", headers=DEFLATE)
        try:
            # Uncompressed, a message is bounded by max_payload_length only.
            await client.send(compressed_frame(bytes(100_000), rsv1=False))
            await client.send(compressed_frame(b"still open", opcode=PING, rsv1=False))
            frame = await client.recv_frame(timeout=10)
            assert (frame.opcode, frame.payload) == (PONG, b"still open"), frame
            await client.send(compressed_frame(deflated(bytes(65537))))
            frame = await client.recv_frame(timeout=10)
            assert frame.opcode == CLOSE, frame
            assert (frame.close_code, frame.close_reason) == (
                1009, "message over the 65536-byte limit")
        finally:
            client.close()
