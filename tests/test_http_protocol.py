"""HttpProtocol over real sockets: the 101, refused upgrades with their statuses, the
handshake deadline, plain HTTP routes."""
from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from wsclient import KEY, TEXT, RawClient, expected_accept, upgrade_request, ws_connect
from wsproto import ConnectionType, WSConnection
from wsproto.events import (AcceptConnection, BytesMessage, CloseConnection, Message,
                            Request, TextMessage)

import harpia
from harpia import Reject, Response
from harpia._frames import serialize_frame


def echo_app(**settings: Any) -> harpia.App:
    app = harpia.harpia(**settings)
    app.ws("/echo", {"message": lambda ws, message: ws.send(message)})
    return app


async def request(port: int, data: bytes, *, body: bool = True) -> tuple[RawClient, Any]:
    client = await RawClient.connect(port)
    await client.send(data)
    return client, await client.read_response(body=body)


async def status_of(port: int, data: bytes) -> Any:
    """Send ``data``, read the response, check the server hangs up after it."""
    client, response = await request(port, data)
    try:
        await client.expect_eof()
    finally:
        client.close()
    return response


# --------------------------------------------------------------------------- 101

async def test_101_switching_protocols_and_a_raw_echo() -> None:
    async with echo_app().serve() as server:
        client, response = await request(server.port, upgrade_request("/echo"))
        try:
            assert (response.status, response.reason) == (101, "Switching Protocols")
            assert response.headers["upgrade"].lower() == "websocket"
            assert response.headers["connection"].lower() == "upgrade"
            assert response.headers["sec-websocket-accept"] == expected_accept(KEY)
            assert "sec-websocket-protocol" not in response.headers
            assert "sec-websocket-extensions" not in response.headers
            await client.send_text("raw")
            assert await client.recv_message() == "raw"
        finally:
            client.close()


async def test_wsproto_client_echo_and_close() -> None:
    async with echo_app().serve() as server:
        client = await RawClient.connect(server.port)
        ws = WSConnection(ConnectionType.CLIENT)
        try:
            await client.send(ws.send(Request(host=f"127.0.0.1:{server.port}", target="/echo")))
            events: list[Any] = []

            async def next_event() -> Any:
                while not events:
                    data = await asyncio.wait_for(client.loop.sock_recv(client.sock, 65536), 5)
                    ws.receive_data(data or None)
                    events.extend(ws.events())
                return events.pop(0)

            assert isinstance(await next_event(), AcceptConnection)
            await client.send(ws.send(Message(data="from wsproto")))
            event = await next_event()
            assert isinstance(event, TextMessage) and event.data == "from wsproto"
            await client.send(ws.send(Message(data=b"\x00" * 70000)))
            chunks = b""
            while True:
                event = await next_event()
                assert isinstance(event, BytesMessage)
                chunks += event.data
                if event.message_finished:
                    break
            assert chunks == b"\x00" * 70000
            await client.send(ws.send(CloseConnection(code=1000, reason="done")))
            event = await next_event()
            assert isinstance(event, CloseConnection) and event.code == 1000
            await client.expect_eof()
        finally:
            client.close()


async def test_frames_right_behind_the_request_are_not_lost() -> None:
    async def hook(request: harpia.Request) -> None:
        await asyncio.sleep(0.02)

    app = echo_app()
    app.ws("/slow-hook", {"message": lambda ws, m: ws.send(m)}, upgrade=hook)
    async with app.serve() as server:
        for path in ("/echo", "/slow-hook"):
            client = await RawClient.connect(server.port)
            try:
                frames = b"".join(serialize_frame(TEXT, f"m{i}", mask=b"abcd") for i in range(3))
                await client.send(upgrade_request(path) + frames)
                assert (await client.read_response()).status == 101
                assert [await client.recv_message() for _ in range(3)] == ["m0", "m1", "m2"]
            finally:
                client.close()


# --------------------------------------------------------------------------- refusals

async def test_unknown_path_is_404() -> None:
    async with echo_app().serve() as server:
        assert (await status_of(server.port, upgrade_request("/nope"))).status == 404
        assert (await status_of(server.port, upgrade_request("/nope", upgrade=False))).status == 404
        with pytest.raises(InvalidStatus) as info:
            async with ws_connect(server.port, "/nope"):
                pass
        assert info.value.response.status_code == 404


async def test_websocket_path_without_upgrade_is_426() -> None:
    async with echo_app().serve() as server:
        response = await status_of(server.port, upgrade_request("/echo", upgrade=False))
        assert response.status == 426
        assert response.headers["upgrade"] == "websocket"
        assert response.headers["sec-websocket-version"] == "13"


async def test_unsupported_websocket_version_is_426() -> None:
    data = upgrade_request("/echo").replace(b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 8")
    async with echo_app().serve() as server:
        response = await status_of(server.port, data)
        assert response.status == 426
        assert response.headers["sec-websocket-version"] == "13"


@pytest.mark.parametrize("data", [
    upgrade_request("/echo").replace(b"Sec-WebSocket-Key: " + KEY.encode() + b"\r\n", b""),
    upgrade_request("/echo", key="not-base64-for-16-bytes!"),
    upgrade_request("/echo", version="HTTP/1.0"),
    upgrade_request("/echo").replace(b"Connection: Upgrade", b"Connection: keep-alive"),
    b"GARBAGE\r\n\r\n",
], ids=["no key", "bad key", "http/1.0", "no connection upgrade", "garbage"])
async def test_malformed_handshakes_are_400(data: bytes) -> None:
    async with echo_app().serve() as server:
        assert (await status_of(server.port, data)).status == 400


async def test_wrong_method_is_405() -> None:
    app = echo_app()
    app.get("/health", lambda: "ok")
    async with app.serve() as server:
        response = await status_of(server.port, upgrade_request("/echo", method="POST"))
        assert response.status == 405
        assert response.headers["allow"] == "GET"
        response = await status_of(server.port, upgrade_request("/health", method="POST",
                                                                upgrade=False))
        assert response.status == 405
        assert response.headers["allow"] == "GET, HEAD"


async def test_origin_not_allowed_is_403() -> None:
    app = harpia.harpia()
    app.ws("/", {"message": lambda ws, m: ws.send(m)}, origins=["https://good.example"])
    async with app.serve() as server:
        bad = await status_of(server.port, upgrade_request(
            "/", headers=[("Origin", "https://evil.example")]))
        assert bad.status == 403
        missing = await status_of(server.port, upgrade_request("/"))
        assert missing.status == 403
        async with ws_connect(server.port, "/", origin="https://GOOD.example") as client:
            await client.send("in")
            assert await client.recv() == "in"


async def test_upgrade_hook_reject_answers_with_its_status() -> None:
    async def async_reject(request: harpia.Request) -> None:
        await asyncio.sleep(0)
        raise Reject(429, b"slow down", {"Retry-After": "5"})

    def sync_reject(request: harpia.Request) -> None:
        if request.query.get("token") != "ok":
            raise Reject(401, "missing token", {"WWW-Authenticate": "Bearer"})

    app = harpia.harpia()
    app.ws("/sync", {}, upgrade=sync_reject)
    app.ws("/async", {}, upgrade=async_reject)
    async with app.serve() as server:
        response = await status_of(server.port, upgrade_request("/sync"))
        assert (response.status, response.body) == (401, b"missing token")
        assert response.headers["www-authenticate"] == "Bearer"
        response = await status_of(server.port, upgrade_request("/async"))
        assert (response.status, response.body) == (429, b"slow down")
        assert response.headers["retry-after"] == "5"
        async with ws_connect(server.port, "/sync?token=ok") as client:
            await client.ping()


async def test_upgrade_hook_crash_is_500_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def async_crash(request: harpia.Request) -> None:
        raise RuntimeError("async hook bug")

    def crash(request: harpia.Request) -> None:
        raise RuntimeError("hook bug")

    app = harpia.harpia()
    app.ws("/sync", {}, upgrade=crash)
    app.ws("/async", {}, upgrade=async_crash)
    async with app.serve() as server:
        assert (await status_of(server.port, upgrade_request("/sync"))).status == 500
        assert (await status_of(server.port, upgrade_request("/async"))).status == 500
    logged = {str(r.exc_info[1]) for r in caplog.records
              if r.name == "harpia" and r.levelno == logging.ERROR and r.exc_info}
    assert logged == {"hook bug", "async hook bug"}


async def test_slow_client_gets_408_after_the_handshake_timeout() -> None:
    app = echo_app(handshake_timeout=0.2)
    async with app.serve() as server:
        started = time.monotonic()
        silent = await RawClient.connect(server.port)
        partial = await RawClient.connect(server.port)
        try:
            await partial.send(upgrade_request("/echo")[:30])   # a slowloris, mid-head
            for client in (silent, partial):
                response = await client.read_response(timeout=3)
                assert response.status == 408
                await client.expect_eof()
            assert 0.15 < time.monotonic() - started < 2
        finally:
            silent.close()
            partial.close()
        # A client that finishes in time is not affected by the timer later.
        async with ws_connect(server.port, "/echo") as client:
            await asyncio.sleep(0.3)
            await client.send("in time")
            assert await client.recv() == "in time"


# --------------------------------------------------------------------------- plain HTTP

async def test_plain_http_get_routes() -> None:
    async def slow(request: harpia.Request) -> str:
        await asyncio.sleep(0)
        return f"async {request.query['x']}"

    def boom() -> str:
        raise RuntimeError("broken page")

    app = harpia.harpia()
    app.get("/health", lambda: "ok")
    app.get("/json", lambda request: {"path": request.path, "n": [1, 2]})
    app.get("/user/:id", lambda request: f"user {request.params['id']}")
    app.get("/created", lambda: Response(b"\x01", status=201, headers={"X-Made": "yes"}))
    app.get("/page", lambda: "<h1>hi</h1>", content_type="text/html; charset=utf-8")
    app.get("/async", slow)
    app.get("/boom", boom)
    get = lambda path, method="GET": status_of(  # noqa: E731
        server.port, upgrade_request(path, method=method, upgrade=False))
    async with app.serve() as server:
        r = await get("/health")
        assert (r.status, r.body) == (200, b"ok")
        assert r.headers["content-type"].startswith("text/plain")
        r = await get("/json")
        assert r.headers["content-type"] == "application/json"
        assert json.loads(r.body) == {"path": "/json", "n": [1, 2]}
        assert (await get("/user/7")).body == b"user 7"
        r = await get("/created")
        assert (r.status, r.body, r.headers["x-made"]) == (201, b"\x01", "yes")
        assert r.headers["content-type"] == "application/octet-stream"
        r = await get("/page")
        assert r.headers["content-type"] == "text/html; charset=utf-8"
        assert (await get("/async?x=1")).body == b"async 1"
        assert (await get("/boom")).status == 500
        client, head = await request(
            server.port, upgrade_request("/health", method="HEAD", upgrade=False), body=False)
        try:
            assert head.status == 200 and head.headers["content-length"] == "2"
            await client.expect_eof()
            assert client.buffer == b""                     # no body for HEAD
        finally:
            client.close()
