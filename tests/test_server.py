"""Listeners over real sockets: several per app, graceful stop, ports and URLs, busy polling."""
from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from wsclient import Mailbox, RawClient, closed_code, upgrade_request, ws_connect

import harpia
from harpia import ServerWebSocket


def echo_app(**settings: Any) -> harpia.App:
    app = harpia.harpia(**settings)
    app.ws("/echo", {"message": lambda ws, message: ws.send(message)})
    return app


# --------------------------------------------------------------------------- listeners

async def test_one_app_served_by_two_listeners() -> None:
    mailbox = Mailbox()
    app = harpia.harpia()
    app.ws("/", {"open": lambda ws: ws.subscribe("all"),
                 "message": lambda ws, m: ws.send(m),
                 "close": lambda ws, code: mailbox.put("close", ws.listener, code)})
    async with app.serve() as first, app.serve() as second:
        assert first.port != second.port
        async with ws_connect(first.port) as a, ws_connect(second.port) as b:
            for client in (a, b):
                await client.send("hi")
                assert await client.recv() == "hi"
            assert len(app.websocket.connections) == 2
            assert app.websocket.subscriber_count("all") == 2
            assert app.publish("all", "to both") == 2
            assert [await a.recv(), await b.recv()] == ["to both", "to both"]
            await second.stop()
            # Only the second listener's client is told to go away.
            assert await closed_code(b) == (1001, "server shutting down")
            assert await mailbox.get() == ("close", second, 1001)
            await a.send("still here")
            assert await a.recv() == "still here"
            assert len(app.websocket.connections) == 1
        assert await mailbox.get() == ("close", first, 1000)


async def test_graceful_stop_sends_1001_to_every_client() -> None:
    mailbox = Mailbox()
    app = harpia.harpia()
    app.ws("/", {"close": lambda ws, code, reason: mailbox.put("close", code, reason)})
    server = await app.serve()
    port = server.port
    clients = [await ws_connect(port).__aenter__() for _ in range(3)]
    raw = await RawClient.open(port)          # reads, but never answers the close
    try:
        started = time.monotonic()
        await server.stop(timeout=0.5)
        assert time.monotonic() - started < 2
        for client in clients:
            assert await closed_code(client) == (1001, "server shutting down")
        frame = await raw.recv_close()
        assert (frame.close_code, frame.close_reason) == (1001, "server shutting down")
        await raw.expect_eof()                 # aborted once the wait was over
        closes = [await mailbox.get() for _ in range(4)]
        assert closes == [("close", 1001, "server shutting down")] * 4
        assert len(app.websocket.connections) == 0
        with pytest.raises(OSError):
            await RawClient.connect(port)
    finally:
        raw.close()
        for client in clients:
            await client.__aexit__(None, None, None)


async def test_close_handlers_can_read_the_listener_while_it_stops() -> None:
    mailbox = Mailbox()
    app = harpia.harpia()
    app.ws("/", {"close": lambda ws, code: mailbox.put("close", code, ws.listener.url)})
    server = await app.serve()
    url = server.url
    async with ws_connect(server.port) as client:
        await client.ping()
        await server.stop()
        assert await closed_code(client) == (1001, "server shutting down")
    assert await mailbox.get() == ("close", 1001, url)
    assert server.port == int(url.rsplit(":", 1)[1])


async def test_stop_aborts_handshakes_in_progress() -> None:
    app = echo_app()
    server = await app.serve()
    client = await RawClient.connect(server.port)
    try:
        await client.send(upgrade_request("/echo")[:20])
        await asyncio.sleep(0.05)
        await server.stop()
        await client.expect_eof()
        assert client.buffer == b""
    finally:
        client.close()


async def test_serve_reports_port_and_url() -> None:
    app = echo_app()
    async with app.serve(port=0) as server:
        assert server.port > 0
        assert server.url == f"ws://127.0.0.1:{server.port}"
        assert server in app.hub.servers
    assert server not in app.hub.servers


async def test_serve_on_every_address_reports_a_url_that_connects() -> None:
    # host="" binds every address of both families: the URL names localhost, not ":port".
    app = echo_app()
    async with app.serve(host="", port=0) as server:
        assert server.url == f"ws://localhost:{server.port}"
        async with harpia.connect(server.url + "/echo") as ws:
            ws.send("hi")
            assert await ws.recv() == "hi"


async def test_handler_can_reach_its_listener() -> None:
    seen: list[Any] = []
    app = harpia.harpia()
    app.ws("/", {"open": lambda ws: seen.append(ws.listener)})
    async with app.serve() as server, ws_connect(server.port) as client:
        await client.ping()
        assert seen == [server]
        assert isinstance(next(iter(server.connections)), ServerWebSocket)


# --------------------------------------------------------------------------- busy polling

async def test_busy_poll_serves_and_goes_back_to_sleep() -> None:
    app = echo_app(busy_poll=0.005)
    async with app.serve() as server:
        cork = server.cork
        assert cork is not None and cork.busy_poll == 0.005
        async with ws_connect(server.port, "/echo") as client:
            for i in range(20):
                await client.send(f"m{i}")
                assert await client.recv() == f"m{i}"
            # While traffic flows the loop polls; a window after the last read it sleeps.
            await client.send("last")
            assert await client.recv() == "last"
            assert cork.polling
            deadline = time.monotonic() + 2
            while cork.polling and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert not cork.polling
