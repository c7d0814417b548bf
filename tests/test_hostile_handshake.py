"""Hostile clients against the HTTP stage of real apps: slow ``async`` upgrade hooks that
clients abandon, and ``async def`` GET handlers that fail.

Each attack runs against a server with default settings while a well-behaved client (the
bystander, see hardening.py) keeps echoing; it must lose nothing.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from typing import Any

import pytest
from hardening import ECHO, wait_for
from wsclient import RawClient, client_frame, upgrade_request, ws_connect

import harpia
from harpia import Response


async def connect_send_reset(port: int, data: bytes) -> None:
    """Connect, send ``data`` and reset at once (RST, no FIN): the client holds nothing."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(sock, data)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        sock.close()


def slow_hook_app(**settings: Any) -> tuple[harpia.App, dict[str, int]]:
    """``/slow``: an upgrade hook that waits for ever (a slow database, say); counts how
    many hooks started and how many were cancelled."""
    counts = {"started": 0, "cancelled": 0}

    async def hook(request: harpia.Request) -> None:
        counts["started"] += 1
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            counts["cancelled"] += 1
            raise

    app = harpia.harpia(**settings)
    app.ws("/echo", ECHO)
    app.ws("/slow", ECHO, upgrade=hook)
    return app, counts


# --------------------------------------------------------------------------- async upgrade hooks

@pytest.mark.timeout(90)
async def test_abandoned_async_upgrade_hooks_are_cancelled_and_free_their_slot(
        bystander: Any) -> None:
    # Three times the pending-handshake cap, sent and reset in a burst: before the fix the
    # hooks piled up, every slot stayed taken for the handshake timeout, and every new
    # client (the bystander's second connection included) was refused meanwhile.
    app, counts = slow_hook_app(max_pending_handshakes=64)
    request = upgrade_request("/slow")
    async with app.serve() as server, bystander(server.port) as b:
        for _ in range(3):
            await asyncio.gather(*(connect_send_reset(server.port, request) for _ in range(64)))
            await wait_for(lambda: server.pending_handshakes() == 0, 20,
                           "the reset clients' slots to be freed")
        await wait_for(lambda: counts["cancelled"] == counts["started"], 5,
                       "every abandoned hook to be cancelled")
        assert counts["started"] >= 64          # the hooks did run (not refused at accept)
        started = time.monotonic()
        ws = await ws_connect(server.port, "/echo")     # a new client gets in at once
        await ws.send("new")
        assert await ws.recv() == "new"
        await ws.close()
        assert time.monotonic() - started < 5
    assert b.finished


async def test_a_hook_that_never_returns_is_cancelled_at_the_handshake_timeout() -> None:
    app, counts = slow_hook_app(handshake_timeout=0.5)
    async with app.serve() as server:
        client = await RawClient.connect(server.port)
        try:
            await client.send(upgrade_request("/slow"))
            started = time.monotonic()
            response = await client.read_response(timeout=10)
            assert response.status == 408
            assert time.monotonic() - started < 5
            await client.expect_eof()
        finally:
            client.close()
        await wait_for(lambda: counts["cancelled"] == 1, 5, "the hook to be cancelled")
        assert server.pending_handshakes() == 0


async def test_frames_behind_the_request_are_bounded_while_a_hook_runs() -> None:
    # Reading goes on during an async hook (so a reset is noticed): what the client sends
    # meanwhile is held up to a bound, then reading pauses; all of it is delivered after.
    release = asyncio.Event()

    async def hook(request: harpia.Request) -> None:
        await release.wait()

    got: list[str | bytes] = []
    app = harpia.harpia()
    app.ws("/hooked", {"message": lambda ws, m: got.append(m)}, upgrade=hook)
    async with app.serve() as server:
        client = await RawClient.connect(server.port)
        try:
            await client.send(upgrade_request("/hooked"))
            frames = b"".join(
                client_frame(1, f"m{i:05d}".ljust(1000, "."))
                for i in range(1000))                   # ~1 MB behind the request
            writer = asyncio.ensure_future(client.send(frames))
            await asyncio.sleep(0.3)
            protocols = [p for p in server.handshake_deadlines]
            assert len(protocols) == 1
            held = protocols[0].held_size
            assert 0 < held < 64 * 1024 + 300 * 1024, held   # the bound plus one read
            release.set()
            assert (await client.read_response()).status == 101
            await asyncio.wait_for(writer, 10)
            await wait_for(lambda: len(got) == 1000, 10, "every early message")
            assert got[0].startswith("m00000") and got[-1].startswith("m00999")
        finally:
            client.close()


# --------------------------------------------------------------------------- async GET handlers

def _bad_header_value() -> Response:
    return Response("x", headers={"X-Split": "a\r\nSet-Cookie: evil=1"})


def _non_latin1_header() -> Response:
    return Response("x", headers={"X-Name": "\u65e5\u672c"})


@pytest.mark.parametrize("make", [
    lambda: 1 / 0,
    lambda: 42,
    _bad_header_value,
    _non_latin1_header,
    lambda: None,
], ids=["raises", "wrong type", "CR/LF in a header", "non-latin-1 header", "returns None"])
@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_failing_get_handler_is_a_500_at_once(
        make: Any, kind: str, caplog: pytest.LogCaptureFixture) -> None:
    async def async_handler() -> Any:
        await asyncio.sleep(0)
        return make()

    app = harpia.harpia()
    app.get("/page", async_handler if kind == "async" else make)
    async with app.serve() as server:
        client = await RawClient.connect(server.port)
        try:
            started = time.monotonic()
            await client.send(upgrade_request("/page", upgrade=False))
            response = await client.read_response(timeout=5)
            assert response.status == 500
            assert time.monotonic() - started < 2
            await client.expect_eof()
        finally:
            client.close()
    errors = [r for r in caplog.records if r.name == "harpia" and r.levelno == logging.ERROR]
    assert errors and "/page" in errors[0].getMessage()
    assert not [r for r in caplog.records if "Exception in callback" in r.getMessage()]


async def test_an_abandoned_async_get_handler_is_cancelled() -> None:
    cancelled = asyncio.Event()

    async def slow() -> str:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    app = harpia.harpia()
    app.get("/slow", slow)
    async with app.serve() as server:
        await connect_send_reset(server.port, upgrade_request("/slow", upgrade=False))
        await asyncio.wait_for(cancelled.wait(), 5)
        await wait_for(lambda: server.pending_handshakes() == 0, 5, "the slot to be freed")
