"""Hostile clients against a TLS listener: connections that never finish their TLS
handshake count as pending handshakes (capped, and dropped at the handshake timeout)
like those that never finish their request head.

The server runs in a process of its own (its descriptors and memory are the point),
with a plain listener for the bystander and a TLS one for the attack.
"""
from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import pytest
import trustme
from hardening import MiB, ServerProcess, wait_for
from wsclient import ws_connect

FLOOD = 2000
RECORD_HEADER = b"\x16\x03\x01\x02\x00"          # a TLS record header, then nothing


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[dict[str, str], ssl.SSLContext]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    both = tmp_path / "both.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(both))
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return {"key": str(both), "cert": str(both)}, client


async def _open(port: int, speak: bool) -> asyncio.StreamWriter | None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return None
    if speak:
        writer.write(RECORD_HEADER)
    return writer


@pytest.mark.timeout(120)
async def test_unfinished_tls_handshakes_are_capped_and_timed_out(
        loop_kind: str, bystander: Any, tls_files: tuple[dict[str, str], ssl.SSLContext]) -> None:
    # 2,000 TCP connections to the TLS port, half silent, half sending one record header.
    # Before: every one was held (an fd and 300 KiB on asyncio, 52 KiB on uvloop) for the
    # whole handshake timeout, uncounted: +606 MiB.  Now: max_pending_tls_handshakes (256)
    # are held, the rest closed at once, the held ones dropped at the handshake timeout.
    tls, client_context = tls_files
    async with ServerProcess(loop_kind, {}, tls=tls, handshake_timeout=3.0) as server, \
            bystander(server.port) as b:
        fds_before = server.fds()
        before = server.reset_peak()
        writers: list[asyncio.StreamWriter | None] = []
        for wave in range(0, FLOOD, 100):           # in waves: the bystander shares this loop
            writers += await asyncio.gather(
                *(_open(server.tls_port, i % 2 == 1) for i in range(wave, wave + 100)))
        try:
            held = server.fds() - fds_before
            growth = server.peak() - before
            assert held <= 256 + 8, f"{held} connections held"
            assert growth < 90 * MiB, f"RSS grew by {growth / MiB:.1f} MiB"
            # The held ones are dropped at the handshake timeout (not before: progress
            # does not extend it, and nothing else ends them)...
            await wait_for(lambda: server.fds() <= fds_before + 2, 10, "the timeout to drop them")
        finally:
            for writer in writers:
                if writer is not None:
                    writer.close()
        # ...and once the attacker is gone (connections it still had queued in the
        # kernel's accept queue were accepted meanwhile), a real TLS client gets in.
        await wait_for(lambda: server.fds() <= fds_before + 2, 10, "the attack to end")
        async with ws_connect(server.tls_port, "/echo", scheme="wss", ssl=client_context) as ws:
            await ws.send("secure")
            assert await ws.recv() == "secure"
        assert (await server.stats())["pending"] == 1     # this request only
    print(f"held {held} fds, peak growth {growth / MiB:.1f} MiB "
          f"({growth / max(held, 1) / 1024:.1f} KiB per pending TLS connection), "
          f"bystander p99 {sorted(b.rtts)[int(len(b.rtts) * 0.99)] * 1000:.1f} ms")
