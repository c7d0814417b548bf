"""ASGI WebSocket endpoints (FastAPI) carried by harpia's engine, over real sockets."""
from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from asgi_apps import make_api, make_app
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

import harpia
from harpia.asgi import connection


def url(server: harpia.Listener, path: str) -> str:
    return f"ws://127.0.0.1:{server.port}{path}"


async def test_echo_text_and_bytes_with_subprotocol_and_headers() -> None:
    async with make_app().serve(port=0) as server:
        async with connect(url(server, "/ws/echo"), subprotocols=["chat.v2", "chat.v1"]) as ws:
            assert ws.subprotocol == "chat.v2"
            assert ws.response.headers["x-served-by"] == "harpia"
            await ws.send("hello")
            assert await asyncio.wait_for(ws.recv(), 10) == "hello"
            await ws.send(b"\x00\x01binary")
            assert await asyncio.wait_for(ws.recv(), 10) == b"\x00\x01binary"
            big = "z" * 300_000
            await ws.send(big)
            assert await asyncio.wait_for(ws.recv(), 10) == big


async def test_many_messages_in_flight_keep_their_order() -> None:
    async with make_app().serve(port=0) as server:
        async with connect(url(server, "/ws/echo")) as ws:
            for i in range(500):            # far more than the bridge queues before pausing
                await ws.send(f"m{i}")
            for i in range(500):
                assert await asyncio.wait_for(ws.recv(), 10) == f"m{i}"


async def test_server_close_with_code_and_reason() -> None:
    async with make_app().serve(port=0) as server:
        async with connect(url(server, "/ws/echo")) as ws:
            await ws.send("close 4001 bye now")
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == 4001
            assert ws.close_reason == "bye now"


async def test_send_after_close_raises_an_oserror() -> None:
    outcome: asyncio.Queue[Any] = asyncio.Queue()

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1000})
        try:
            await send({"type": "websocket.send", "text": "too late"})
        except OSError as exc:
            await outcome.put(exc)
        else:
            await outcome.put(None)
        message = await receive()
        await outcome.put(message)

    app = harpia.harpia()
    app.mount("/", asgi)
    async with app.serve(port=0) as server:
        async with connect(url(server, "/")) as ws:
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == 1000
        error = await asyncio.wait_for(outcome.get(), 10)
        assert isinstance(error, harpia.errors.ClientDisconnected)
        assert await asyncio.wait_for(outcome.get(), 10) == {
            "type": "websocket.disconnect", "code": 1000, "reason": ""}


async def test_client_close_code_reaches_the_app() -> None:
    events: list[str] = []
    async with make_app(events).serve(port=0) as server:
        async with connect(url(server, "/ws/echo")) as ws:
            await ws.send("ping")
            assert await ws.recv() == "ping"
            await ws.close(4321, "client leaves")
        for _ in range(500):
            if any(e.startswith("disconnect") for e in events):
                break
            await asyncio.sleep(0.01)
        assert "disconnect 4321" in events


async def test_denial_response_and_close_before_accept() -> None:
    async with make_app().serve(port=0) as server:
        with pytest.raises(InvalidStatus) as denied:
            async with connect(url(server, "/ws/deny")):
                pass
        assert denied.value.response.status_code == 401
        assert json.loads(denied.value.response.body) == {"error": "no token"}
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url(server, "/ws/refuse")):
                pass
        assert refused.value.response.status_code == 403
        with pytest.raises(InvalidStatus) as missing:   # no such endpoint in the app
            async with connect(url(server, "/ws/none")):
                pass
        assert missing.value.response.status_code == 403


async def test_app_error_before_accept_is_500_after_accept_1011() -> None:
    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        if scope["path"] == "/early":
            raise RuntimeError("before accept")
        await send({"type": "websocket.accept"})
        await receive()
        raise RuntimeError("after accept")

    app = harpia.harpia()
    app.mount("/", asgi)
    async with app.serve(port=0) as server:
        with pytest.raises(InvalidStatus) as early:
            async with connect(url(server, "/early")):
                pass
        assert early.value.response.status_code == 500
        async with connect(url(server, "/late")) as ws:
            await ws.send("x")
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == 1011


async def test_native_route_and_asgi_websocket_share_topics() -> None:
    async with make_app().serve(port=0) as server:
        async with connect(url(server, "/ws/room")) as asgi_ws, \
                connect(url(server, "/native")) as native_ws:
            assert await asyncio.wait_for(asgi_ws.recv(), 10) == "joined"
            app = server.app
            for _ in range(200):                     # the native open handler subscribes
                if app.websocket.subscriber_count("room") == 2:
                    break
                await asyncio.sleep(0.01)
            assert app.websocket.subscriber_count("room") == 2
            await native_ws.send("hi")
            assert await asyncio.wait_for(asgi_ws.recv(), 10) == "native says hi"
            await asgi_ws.send("yo")
            assert await asyncio.wait_for(native_ws.recv(), 10) == "asgi says yo"
            assert app.publish("room", "from the app") == 2
            assert await asyncio.wait_for(asgi_ws.recv(), 10) == "from the app"
            assert await asyncio.wait_for(native_ws.recv(), 10) == "from the app"


async def test_permessage_deflate_as_negotiated() -> None:
    app = harpia.harpia()
    app.mount("/", make_api(), per_message_deflate=True)
    async with app.serve(port=0) as server:
        async with connect(url(server, "/ws/echo"), compression="deflate") as ws:
            assert "permessage-deflate" in ws.response.headers["sec-websocket-extensions"]
            text = "compress me " * 1000
            await ws.send(text)
            assert await asyncio.wait_for(ws.recv(), 10) == text
    async with make_app().serve(port=0) as server:      # not enabled on the mount: none
        async with connect(url(server, "/ws/echo"), compression="deflate") as ws:
            assert "sec-websocket-extensions" not in ws.response.headers


async def test_inflation_limits_of_the_mount_apply_as_on_a_native_route() -> None:
    app = harpia.harpia()
    app.mount("/", make_api(), per_message_deflate=True, max_inflated_length=65536)
    async with app.serve(port=0) as server:
        async with connect(url(server, "/ws/echo"), compression="deflate") as ws:
            await ws.send("a" * 60000)
            assert await asyncio.wait_for(ws.recv(), 10) == "a" * 60000
            await ws.send("a" * 65537)                 # a few hundred bytes compressed
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_send_waits_while_the_client_does_not_read() -> None:
    sent = 0
    done = asyncio.Event()
    chunk = b"b" * 65536

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal sent
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        for _ in range(400):                 # 25 MiB against a 256 KiB limit
            await send({"type": "websocket.send", "bytes": chunk})
            sent += 1
        done.set()

    app = harpia.harpia()
    app.mount("/", asgi, backpressure_limit=256 * 1024)
    async with app.serve(port=0) as server:
        async with connect(url(server, "/"), max_size=None, max_queue=1) as ws:
            last = -1
            for _ in range(100):
                await asyncio.sleep(0.05)
                if sent == last:
                    break
                last = sent
            assert sent < 200, sent          # stalled: nothing was dropped, nothing piled up
            received = 0
            while received < 400:
                message = await asyncio.wait_for(ws.recv(), 10)
                assert message == chunk
                received += 1
            await asyncio.wait_for(done.wait(), 10)


async def test_connection_helper_refuses_foreign_scopes() -> None:
    with pytest.raises(harpia.HarpiaError):
        connection({"type": "websocket", "extensions": {}})


async def test_upgrade_to_native_route_is_untouched_by_the_mount() -> None:
    app = make_app()
    app.ws("/echo", {"message": lambda ws, m: ws.send(m)})
    async with app.serve(port=0) as server:
        async with connect(url(server, "/echo")) as ws:
            await ws.send("native")
            assert await asyncio.wait_for(ws.recv(), 10) == "native"
        assert all(type(ws).__name__ == "ServerWebSocket" for ws in app.websocket.connections)


async def test_the_how_to_example_service() -> None:
    """examples/fastapi_service.py, as docs/howto/fastapi.md shows it."""
    import importlib.util
    from pathlib import Path

    from asgi_apps import HttpClient

    path = Path(__file__).resolve().parents[1] / "examples" / "fastapi_service.py"
    spec = importlib.util.spec_from_file_location("fastapi_service_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    app: harpia.App = module.app
    async with app.serve(port=0) as server:
        async with connect(url(server, "/feed")) as feed, connect(url(server, "/chat")) as chat:
            for _ in range(200):
                if app.websocket.subscriber_count("chat") == 2:
                    break
                await asyncio.sleep(0.01)
            client = await HttpClient.open(server.port)
            status, _, body = await client.request("POST", "/messages", b'{"text": "hello"}',
                                                   [("Content-Type", "application/json")])
            assert (status, json.loads(body)) == (201, {"delivered": 2})
            assert await asyncio.wait_for(feed.recv(), 10) == "hello"
            assert await asyncio.wait_for(chat.recv(), 10) == "hello"
            await chat.send("from native")
            assert await asyncio.wait_for(feed.recv(), 10) == "from native"
            await feed.send("from fastapi")
            assert await asyncio.wait_for(chat.recv(), 10) == "from fastapi"
            assert json.loads((await client.request("GET", "/messages"))[2]) == ["hello"]
            assert json.loads((await client.request("GET", "/health"))[2]) == {"status": "ok"}
            await client.close()


async def test_idle_timeout_applies_to_asgi_websockets_of_a_mount_only_app() -> None:
    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        message = await receive()
        assert message["type"] == "websocket.disconnect"

    app = harpia.harpia()                        # no native route: only the mount
    app.mount("/", asgi, idle_timeout=0.5, send_pings=False)
    async with app.serve(port=0) as server:
        async with connect(url(server, "/"), ping_interval=None) as ws:
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == 1001
            assert loop.time() - started < 8
