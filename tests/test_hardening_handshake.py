"""Hostile clients before the upgrade: oversized heads, slowloris, connection floods, the
caps on pending handshakes and on connections, connections that vanish by thousands.

Each attack runs against a real server while a well-behaved client (the bystander, see
hardening.py) keeps echoing; it must lose nothing.
"""
from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest
import trustme
from hardening import ECHO, MiB, ServerProcess, get_json, http_get, wait_for
from wsclient import BINARY, RawClient, client_frame, upgrade_request, ws_connect

import harpia


async def status_of(port: int, data: bytes) -> int:
    """Send ``data`` as the request; the status answered, once the server hung up."""
    client = await RawClient.connect(port)
    try:
        await client.send(data)
        response = await client.read_response()
        await client.expect_eof()
    finally:
        client.close()
    return response.status


# --------------------------------------------------------------------------- oversized heads

def _many_headers(count: int, size: int) -> list[tuple[str, str]]:
    return [(f"X-Filler-{i}", "v" * size) for i in range(count)]


@pytest.mark.parametrize("data, status", [
    (upgrade_request("/echo?" + "q" * 9000), 414),
    (upgrade_request("/echo", headers=[("X-Big", "v" * 9000)]), 431),
    (upgrade_request("/echo", headers=_many_headers(129, 1)), 431),
    (upgrade_request("/echo", headers=_many_headers(100, 700)), 431),    # 70 KB > 64 KiB
    (upgrade_request("/echo", headers=[("X-Nul", "a\x00b")]), 400),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)), 400),  # TLS hello
], ids=["request line 9000 B", "header line 9000 B", "129 headers", "head 70 KB",
        "NUL in a value", "binary"])
async def test_oversized_or_malformed_heads_get_their_status(
        data: bytes, status: int, bystander: Any) -> None:
    app = harpia.harpia()
    app.ws("/echo", ECHO)
    async with app.serve() as server, bystander(server.port):
        assert await status_of(server.port, data) == status
        assert server.pending_handshakes() == 0


# --------------------------------------------------------------------------- slowloris

async def trickle(port: int, data: bytes, every: float) -> tuple[float, int]:
    """Send ``data`` a byte at a time until the server answers; (seconds, status)."""
    client = await RawClient.connect(port)
    started = time.monotonic()
    try:
        for byte in data:
            try:
                await client.send(bytes([byte]))
            except OSError:
                break                                   # the server hung up meanwhile
            if client.buffer or await _readable(client, every):
                break
        response = await client.read_response()
        await client.expect_eof()
        return time.monotonic() - started, response.status
    finally:
        client.close()


async def _readable(client: RawClient, timeout: float) -> bool:
    try:
        return await client._fill(timeout)
    except asyncio.TimeoutError:
        return False


async def test_slowloris_clients_get_408_at_the_timeout_however_steadily_they_send(
        bystander: Any) -> None:
    """Twenty clients each send a byte every 50 ms: progress never extends the deadline."""
    app = harpia.harpia(handshake_timeout=0.5)
    app.ws("/echo", ECHO)
    async with app.serve() as server, bystander(server.port):
        results = await asyncio.gather(*(trickle(server.port, upgrade_request("/echo"), 0.05)
                                         for _ in range(20)))
        for elapsed, status in results:
            assert status == 408
            assert 0.45 < elapsed < 1.5
        assert server.pending_handshakes() == 0


async def test_a_tls_client_that_never_finishes_its_handshake_is_dropped_at_the_timeout(
        bystander: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The TLS handshake is bounded by ``handshake_timeout`` too (asyncio's own default is
    60 s); the bystander uses a plain listener of the same app."""
    cert = trustme.CA().issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "both.pem"))
    tls = {"key": str(tmp_path / "both.pem"), "cert": str(tmp_path / "both.pem")}
    app = harpia.harpia(handshake_timeout=0.5)
    app.ws("/echo", ECHO)
    async with app.serve() as plain, app.serve(tls=tls) as secure, bystander(plain.port):
        silent = await RawClient.connect(secure.port)
        half = await RawClient.connect(secure.port)
        plain_http = await RawClient.connect(secure.port)
        started = time.monotonic()
        try:
            await half.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello's start
            for client in (silent, half):
                await client.expect_eof(timeout=3)
            assert time.monotonic() - started < 1.5
            # Plain HTTP instead of a ClientHello: dropped, without a log line either.
            await plain_http.send(upgrade_request("/echo"))
            await plain_http.expect_eof(timeout=3)
        finally:
            for client in (silent, half, plain_http):
                client.close()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


# --------------------------------------------------------------------------- caps

async def test_over_max_pending_handshakes_new_connections_are_closed_at_once(
        bystander: Any, caplog: pytest.LogCaptureFixture) -> None:
    app = harpia.harpia(max_pending_handshakes=8, handshake_timeout=1.0)
    app.ws("/echo", ECHO)
    async with app.serve() as server, bystander(server.port):   # upgraded: not pending
        silent = [await RawClient.connect(server.port) for _ in range(8)]
        await wait_for(lambda: server.pending_handshakes() == 8, what="8 pending handshakes")
        refused = [await RawClient.connect(server.port) for _ in range(20)]
        try:
            for client in refused:
                started = time.monotonic()
                await client.expect_eof(timeout=1)          # closed without a byte
                assert client.buffer == b"" and time.monotonic() - started < 0.9
            assert server.pending_handshakes() == 8
            # Logged once, not 20 times.
            warnings = [r for r in caplog.records if "max_pending_handshakes" in r.getMessage()]
            assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
            # The silent ones time out (408) and free their places.
            for client in silent:
                assert (await client.read_response(timeout=3)).status == 408
            async with ws_connect(server.port, "/echo") as late:
                await late.send("after")
                assert await late.recv() == "after"
        finally:
            for client in silent + refused:
                client.close()


async def test_over_max_connections_upgrades_get_503(
        bystander: Any, caplog: pytest.LogCaptureFixture) -> None:
    gate = asyncio.Event()

    async def hold(request: harpia.Request) -> None:
        await gate.wait()

    app = harpia.harpia(max_connections=3)
    app.ws("/echo", ECHO)
    app.ws("/held", ECHO, upgrade=hold)
    app.get("/health", lambda: "ok")
    async with app.serve() as server, bystander(server.port):   # one of the three
        first = await RawClient.open(server.port, "/echo")
        # Two upgrades wait in an async hook: both pass the check made before the hook.
        clients = [await RawClient.connect(server.port) for _ in range(2)]
        try:
            for client in clients:
                await client.send(upgrade_request("/held"))
            await wait_for(lambda: server.pending_handshakes() == 2, what="2 hooks running")
            gate.set()
            statuses = sorted([(await client.read_response()).status for client in clients])
            assert statuses == [101, 503]              # checked again after the hook
            for _ in range(5):
                clients.append(await RawClient.connect(server.port))
                response = await clients[-1].handshake("/echo")
                assert (response.status, response.headers["retry-after"]) == (503, "5")
                await clients[-1].expect_eof()
            warnings = [r for r in caplog.records if "max_connections" in r.getMessage()]
            assert len(warnings) == 1
            assert (await http_get(server.port, "/health")).body == b"ok"   # HTTP still served
            # A place frees up when a connection is gone.
            first.close()
            await wait_for(lambda: server.open_connections() == 2, what="a free place")
            clients.append(await RawClient.open(server.port, "/echo"))
            await clients[-1].send_text("in")
            assert await clients[-1].recv_message() == "in"
        finally:
            for client in [first, *clients]:
                client.close()


# --------------------------------------------------------------------------- vanishing clients

async def vanish(port: int, how: str) -> None:
    """One connection that ends badly in one of four ways."""
    client = await RawClient.connect(port)
    try:
        if how == "connect":                   # connect, hang up
            pass
        elif how == "half head":               # half a request, then RST
            await client.send(upgrade_request("/echo")[:40])
        elif how == "half frame":              # upgraded, half a frame, then RST
            assert (await client.handshake("/echo")).status == 101
            await client.send(client_frame(BINARY, b"x" * 1000)[:500])
        elif how == "unmasked":                # upgraded, a protocol error, then gone
            assert (await client.handshake("/echo")).status == 101
            await client.send(b"\x81\x02hi")
            await client.recv_close()
    finally:
        client.reset()


async def test_thousands_of_vanishing_connections_leave_nothing_behind(
        loop_kind: str, bystander: Any) -> None:
    modes = ["connect", "half head", "half frame", "unmasked"]
    # The waves of 500 connections are made from this test's own event loop, so the
    # bystander's round trip also measures the client side's connect work; this test is
    # about what the server keeps, the responsiveness bound is the other tests' business.
    async with ServerProcess(loop_kind, {}) as server, bystander(server.port, max_rtt=3.0):
        async def wave(count: int) -> None:
            await asyncio.gather(*(vanish(server.port, modes[i % 4]) for i in range(count)))

        await wave(500)                                   # warm up the allocator
        await wait_for(lambda: _settled(server.port), what="the server to settle")
        before = server.rss()
        for _ in range(4):
            await wave(500)
        await wait_for(lambda: _settled(server.port), what="the server to settle")
        stats = await server.stats()
        growth = server.rss() - before
        assert stats["closes_by_code"] == {"1002": 625, "1006": 625}
        # Nothing kept: the bystander's connection and this request's protocol are all.
        assert stats["objects"] == {"ServerWebSocket": 1, "HttpProtocol": 1}
        assert growth < 4 * MiB, f"RSS grew by {growth / MiB:.1f} MiB for 2,000 connections"
    # One warning for 625 protocol errors; nothing for the resets and half heads.
    assert len(server.warnings()) == 1, server.log
    assert "with 1002" in server.warnings()[0]


async def _settled(port: int) -> bool:
    stats = await get_json(port, "/stats")
    # Only the bystander is connected, and only this request is in its HTTP stage.
    return bool(stats["live"] == 1 and stats["pending"] == 1)
