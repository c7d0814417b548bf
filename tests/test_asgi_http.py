"""ASGI HTTP through ``app.mount``: a real FastAPI app over real sockets (asyncio and uvloop)."""
from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path
from typing import Any

import pytest
import trustme
from asgi_apps import HttpClient, make_app, parse_responses

import harpia


async def test_json_get_post_and_keep_alive() -> None:
    app = make_app()
    async with app.serve(port=0) as server:
        client = await HttpClient.open(server.port)
        status, headers, body = await client.request("GET", "/items/7?q=x")
        assert (status, json.loads(body)) == (200, {"item_id": 7, "q": "x"})
        assert headers["content-type"] == "application/json"
        status, _, body = await client.request(
            "POST", "/items", json.dumps({"name": "pen", "price": 1.5}).encode(),
            [("Content-Type", "application/json")])
        assert (status, json.loads(body)) == (200, {"name": "pen", "price": 1.5, "created": True})
        status, _, body = await client.request("POST", "/items", b"{not json",
                                               [("Content-Type", "application/json")])
        assert status == 422
        # harpia's own routes keep working beside the mount, on the same connection too.
        status, _, body = await client.request("GET", "/health")
        assert (status, json.loads(body)) == (200, {"status": "ok"})
        status, _, body = await client.request("GET", "/nowhere")
        assert (status, json.loads(body)) == (404, {"detail": "Not Found"})
        status, _, body = await client.request("GET", "/items/8")
        assert json.loads(body) == {"item_id": 8, "q": None}
        await client.close()


async def test_mount_under_prefix_sets_root_path() -> None:
    app = make_app(path="/api")
    async with app.serve(port=0) as server:
        client = await HttpClient.open(server.port)
        status, _, body = await client.request("GET", "/api/state")
        assert status == 200
        assert json.loads(body) == {"greeting": "hello from lifespan", "root_path": "/api",
                                    "path": "/api/state"}
        await client.close()
        # Outside the prefix (and not a whole-segment match): harpia's own 404.
        for target in ("/state", "/apix/state"):
            client = await HttpClient.open(server.port)
            status, _, body = await client.request("GET", target)
            assert (status, body) == (404, b"not found\n")
            await client.close()


async def test_lifespan_runs_once_around_serving() -> None:
    events: list[str] = []
    app = make_app(events)
    async with app.serve(port=0) as server:
        assert events == ["startup"]
        client = await HttpClient.open(server.port)
        status, _, body = await client.request("GET", "/state")
        assert json.loads(body)["greeting"] == "hello from lifespan"
        await client.close()
    assert events == ["startup", "shutdown"]


async def test_streamed_response_is_chunked() -> None:
    async with make_app().serve(port=0) as server:
        client = await HttpClient.open(server.port)
        status, headers, body = await client.request("GET", "/stream?n=30&size=1000")
        assert status == 200
        assert headers["transfer-encoding"] == "chunked"
        assert body == b"".join(bytes([0x61 + i % 26]) * 1000 for i in range(30))
        status, _, body = await client.request("GET", "/items/1")   # still usable afterwards
        assert status == 200
        await client.close()


async def test_head_gets_headers_without_body() -> None:
    async with make_app().serve(port=0) as server:
        client = await HttpClient.open(server.port)
        client.send_raw(b"HEAD /items/3 HTTP/1.1\r\nHost: x\r\n\r\n"
                        b"GET /items/4 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        (s1, h1, b1), (s2, _, b2) = parse_responses(await client.read_until_closed(), ["HEAD", "GET"])
        assert (s1, b1) == (200, b"")
        assert int(h1["content-length"]) == len(b'{"item_id":3,"q":null}')
        assert (s2, json.loads(b2)) == (200, {"item_id": 4, "q": None})


async def test_pipelined_requests_answered_in_order() -> None:
    async with make_app().serve(port=0) as server:
        client = await HttpClient.open(server.port)
        body = b'{"name": "cup", "price": 2}'
        client.send_raw(
            b"GET /stream?n=3&size=5 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /items HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            + b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /items/9 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        responses = parse_responses(await client.read_until_closed(), ["GET"] * 4)
        assert [r[0] for r in responses] == [200] * 4
        assert responses[0][2] == b"aaaaabbbbbccccc"
        assert json.loads(responses[1][2])["name"] == "cup"
        assert json.loads(responses[2][2]) == {"status": "ok"}
        assert json.loads(responses[3][2])["item_id"] == 9


async def test_chunked_upload_is_streamed() -> None:
    async with make_app().serve(port=0) as server:
        client = await HttpClient.open(server.port)
        client.send_raw(b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        total = 0
        for i in range(50):
            piece = bytes([i]) * 4000
            total += len(piece)
            client.send_raw(b"%x\r\n%s\r\n" % (len(piece), piece))
            await client.writer.drain()
        client.send_raw(b"0\r\n\r\n")
        status, _, body = await client.response()
        assert (status, json.loads(body)) == (200, {"size": total})
        await client.close()


async def test_expect_100_continue() -> None:
    async with make_app().serve(port=0) as server:
        client = await HttpClient.open(server.port)
        client.send_raw(b"POST /echo-body HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                        b"Expect: 100-continue\r\nConnection: close\r\n\r\n")
        # The client holds its body back until the server asks for it.
        interim = await asyncio.wait_for(client.reader.readuntil(b"\r\n\r\n"), 10)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        client.send_raw(b"hello")
        (status, _, body), = parse_responses(await client.read_until_closed(), ["POST"])
        assert (status, body) == (200, b"hello")


async def test_expect_100_continue_over_limit_gets_413_without_continue() -> None:
    app = make_app(max_body_size=1000)
    async with app.serve(port=0) as server:
        client = await HttpClient.open(server.port)
        client.send_raw(b"POST /echo-body HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n"
                        b"Expect: 100-continue\r\n\r\n")
        data = await client.read_until_closed()
        assert data.startswith(b"HTTP/1.1 413 ")
        assert b"100 Continue" not in data


async def test_app_error_is_500_and_connection_survives_for_others() -> None:
    async with make_app().serve(port=0) as server:
        client = await HttpClient.open(server.port)
        status, _, body = await client.request("GET", "/boom")
        assert status == 500
        await client.close()
        client = await HttpClient.open(server.port)
        status, _, _ = await client.request("GET", "/items/1")
        assert status == 200
        await client.close()


async def test_http_disconnect_reaches_a_waiting_app() -> None:
    seen: asyncio.Queue[str] = asyncio.Queue()

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        message = await receive()
        assert message["type"] == "http.request"
        await seen.put("request")
        message = await receive()          # nothing more will come: wait for the disconnect
        await seen.put(message["type"])

    app = harpia.harpia()
    app.mount("/", asgi)
    async with app.serve(port=0) as server:
        client = await HttpClient.open(server.port)
        client.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert await asyncio.wait_for(seen.get(), 10) == "request"
        await client.close()
        assert await asyncio.wait_for(seen.get(), 10) == "http.disconnect"


async def test_slow_reader_pauses_a_streamed_response() -> None:
    produced = 0
    chunk = b"x" * (256 * 1024)
    total_chunks = 200                      # 50 MiB: far more than the socket buffers hold

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal produced
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(total_chunks):
            produced += 1
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    app = harpia.harpia()
    app.mount("/", asgi)
    async with app.serve(port=0) as server:
        client = await HttpClient.open(server.port)
        client.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        # The client reads nothing: production must stall well before the end.
        last = -1
        for _ in range(100):
            await asyncio.sleep(0.05)
            if produced == last:
                break
            last = produced
        assert produced < total_chunks // 2, produced
        data = await client.read_until_closed()
        assert len(data) > total_chunks * len(chunk)
        assert produced == total_chunks


# ---------------------------------------------------------------- hostile input


async def test_body_over_limit_by_content_length_is_413() -> None:
    app = make_app(max_body_size=1000)
    async with app.serve(port=0) as server:
        client = await HttpClient.open(server.port)
        client.send_raw(b"POST /echo-body HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n")
        assert (await client.read_until_closed()).startswith(b"HTTP/1.1 413 ")


async def test_chunked_body_over_limit_is_413() -> None:
    app = make_app(max_body_size=10_000)
    async with app.serve(port=0) as server:
        client = await HttpClient.open(server.port)
        client.send_raw(b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        piece = b"y" * 4000
        for _ in range(4):
            client.send_raw(b"%x\r\n%s\r\n" % (len(piece), piece))
        data = await client.read_until_closed()
        assert data.startswith(b"HTTP/1.1 413 "), data[:100]


@pytest.mark.parametrize("case", ["headers", "head-size", "request-line", "malformed"])
async def test_limits_on_a_later_keep_alive_request(case: str) -> None:
    """The first head is read by the upgrade path's parser; later ones must get the same
    bounded answers from the ASGI side."""
    async with make_app().serve(port=0) as server:
        client = await HttpClient.open(server.port)
        status, _, _ = await client.request("GET", "/items/1")
        assert status == 200
        if case == "headers":
            head = b"GET /items/2 HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(200))
            expected = b"431"
        elif case == "head-size":
            head = b"GET /items/2 HTTP/1.1\r\n" + b"".join(
                b"X-%d: %s\r\n" % (i, b"v" * 4000) for i in range(20))
            expected = b"431"
        elif case == "request-line":
            head = b"GET /items/" + b"2" * 9000 + b" HTTP/1.1\r\n"
            expected = b"414"
        else:
            head = b"GET /items/2 HTTP/1.1\r\nBad Header\r\n"
            expected = b"400"
        client.send_raw(head + b"\r\n")
        data = await client.read_until_closed()
        assert data[9:12] == expected, data[:80]


async def test_first_request_limits_still_apply_under_a_mount() -> None:
    async with make_app().serve(port=0) as server:
        client = await HttpClient.open(server.port)
        client.send_raw(b"GET /items/2 HTTP/1.1\r\n" +
                        b"".join(b"X-%d: v\r\n" % i for i in range(200)) + b"\r\n")
        assert (await client.read_until_closed())[9:12] == b"431"


async def test_slow_head_on_keep_alive_connection_gets_408() -> None:
    app = make_app()
    app.handshake_timeout = 0.5
    async with app.serve(port=0) as server:
        client = await HttpClient.open(server.port)
        assert (await client.request("GET", "/items/1"))[0] == 200
        client.send_raw(b"GET /items/2 HTTP/1.1\r\nHost: x\r\n")   # and never the end
        data = await client.read_until_closed()
        assert data.startswith(b"HTTP/1.1 408 ")


async def test_idle_keep_alive_connection_is_closed() -> None:
    app = make_app(keep_alive_timeout=0.3)
    async with app.serve(port=0) as server:
        client = await HttpClient.open(server.port)
        assert (await client.request("GET", "/items/1"))[0] == 200
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await client.read_until_closed() == b""
        assert loop.time() - started < 5


async def closed_at_once(port: int) -> bool:
    """Whether a new connection is closed by the server before it answers a request."""
    client = await HttpClient.open(port)
    try:
        client.send_raw(b"GET /items/9 HTTP/1.1\r\nHost: x\r\n\r\n")
        return not (await client.read_some()).startswith(b"HTTP/1.1 200 ")
    except ConnectionError:
        return True
    finally:
        await client.close()


async def test_keep_alive_connections_sending_a_head_count_toward_max_pending_handshakes() -> None:
    # A slowloris on later requests: each connection gets one quick answer, then trickles
    # the next head.  They count as pending handshakes, so the flood is capped.
    app = make_app(keep_alive_timeout=60)
    app.max_pending_handshakes = 8
    app.handshake_timeout = 60     # the heads must not time out during the test
    async with app.serve(port=0) as server:
        tricklers = [await HttpClient.open(server.port) for _ in range(8)]
        for client in tricklers:
            assert (await client.request("GET", "/items/1"))[0] == 200
            client.send_raw(b"GET /items/2 HTTP/1.1\r\nHost: x\r\n")   # and never the end
            await client.writer.drain()
        assert app.asgi is not None
        deadline = asyncio.get_running_loop().time() + 10
        while app.asgi.waiting_connections() < 8:
            assert asyncio.get_running_loop().time() < deadline, app.asgi.waiting_connections()
            await asyncio.sleep(0.01)
        assert await closed_at_once(server.port)
        # The tricklers leave: the server takes new connections again.
        for client in tricklers:
            await client.close()
        while app.asgi.waiting_connections():
            assert asyncio.get_running_loop().time() < deadline, app.asgi.waiting_connections()
            await asyncio.sleep(0.01)
        assert not await closed_at_once(server.port)


async def test_idle_keep_alive_connections_give_way_to_new_ones_oldest_first() -> None:
    app = make_app(keep_alive_timeout=60)
    app.max_pending_handshakes = 8
    async with app.serve(port=0) as server:
        idle = [await HttpClient.open(server.port) for _ in range(8)]
        for client in idle:
            assert (await client.request("GET", "/items/1"))[0] == 200
        assert app.asgi is not None and app.asgi.waiting_connections() == 8
        # A ninth connection is served; the longest-idle one is closed to make room, so the
        # server never holds more than the cap of connections waiting for a request.
        newcomer = await HttpClient.open(server.port)
        assert (await newcomer.request("GET", "/items/2"))[0] == 200
        assert await idle[0].read_until_closed() == b""
        for client in idle[1:]:
            assert (await client.request("GET", "/items/3"))[0] == 200
        assert app.asgi.waiting_connections() == 8
        for client in [*idle, newcomer]:
            await client.close()


async def test_open_http_connections_are_in_the_stats() -> None:
    app = make_app(keep_alive_timeout=60)
    async with app.serve(port=0) as server:
        assert app.stats()["http_connections_open"] == 0
        clients = [await HttpClient.open(server.port) for _ in range(3)]
        for client in clients:
            assert (await client.request("GET", "/items/1"))[0] == 200
        assert app.stats()["http_connections_open"] == 3
        assert "harpia_http_connections_open 3" in app.metrics_text()
        for client in clients:
            await client.close()
        deadline = asyncio.get_running_loop().time() + 10
        while app.stats()["http_connections_open"]:
            assert asyncio.get_running_loop().time() < deadline, app.stats()
            await asyncio.sleep(0.01)


async def test_shutdown_lets_an_in_flight_request_finish() -> None:
    release = asyncio.Event()
    started = asyncio.Event()

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        started.set()
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})

    app = harpia.harpia()
    app.mount("/", asgi)
    server = await app.serve(port=0)
    client = await HttpClient.open(server.port)
    idle = await HttpClient.open(server.port)
    release.set()
    assert (await idle.request("GET", "/x"))[0] == 200
    release.clear()
    client.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.wait_for(started.wait(), 10)
    stopping = asyncio.ensure_future(server.stop())
    assert await idle.read_until_closed() == b""          # idle keep-alive: closed at once
    release.set()
    (status, headers, body), = parse_responses(await client.read_until_closed(), ["GET"])
    assert (status, body, headers["connection"]) == (200, b"done", "close")
    await asyncio.wait_for(stopping, 10)


def test_mount_options_are_checked() -> None:
    app = harpia.harpia()
    with pytest.raises(harpia.ConfigurationError, match="max_body_size"):
        app.mount("/", make_app, max_body_size=-1)
    with pytest.raises(harpia.ConfigurationError, match="nope"):
        app.mount("/", make_app, nope=1)
    with pytest.raises(harpia.ConfigurationError, match="start with '/'"):
        app.mount("api", make_app)
    app.mount("/api", make_app)
    with pytest.raises(harpia.ConfigurationError, match="already mounted"):
        app.mount("/api/", make_app)


@pytest.mark.parametrize(("path", "secure"), [("/native-echo", False), ("/ws/echo", False),
                                             ("/native-echo", True)])
async def test_websocket_upgrade_after_keep_alive_requests(
        path: str, secure: bool, tmp_path: Path) -> None:
    """aiohttp's pooled connections upgrade a connection that already served requests.

    Over TLS, the mount hands the connection back to the upgrade path on its TLS transport:
    the upgrade must not start TLS a second time on the decrypted side."""
    import wsproto
    from wsproto.events import AcceptConnection, Request, TextMessage

    tls: dict[str, str] | None = None
    context: ssl.SSLContext | None = None
    if secure:
        ca = trustme.CA()
        cert = ca.issue_cert("localhost", "127.0.0.1")
        tls = {"key": str(tmp_path / "key.pem"), "cert": str(tmp_path / "cert.pem")}
        cert.private_key_pem.write_to_path(tls["key"])
        cert.cert_chain_pems[0].write_to_path(tls["cert"])
        context = ssl.create_default_context()
        ca.configure_trust(context)
    app = make_app()
    app.ws("/native-echo", {"message": lambda ws, m: ws.send(m)})
    async with app.serve(port=0, tls=tls) as server:
        client = await HttpClient.open(server.port, context)
        assert (await client.request("GET", "/items/1"))[0] == 200
        assert (await client.request("GET", "/health"))[0] == 200
        ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        client.send_raw(ws.send(Request(host="localhost", target=path)))
        events: list[object] = []
        while not any(isinstance(e, AcceptConnection) for e in events):
            ws.receive_data(await asyncio.wait_for(client.reader.read(65536), 10))
            events.extend(ws.events())
        client.send_raw(ws.send(TextMessage(data="after keep-alive")))
        texts: list[str] = []
        while not texts:
            ws.receive_data(await asyncio.wait_for(client.reader.read(65536), 10))
            texts += [e.data for e in ws.events() if isinstance(e, TextMessage)]
        assert texts == ["after keep-alive"]
        await client.close()


async def test_other_protocol_upgrade_is_served_as_http_then_closed() -> None:
    async with make_app().serve(port=0) as server:
        client = await HttpClient.open(server.port)
        client.send_raw(b"GET /items/5 HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                        b"Upgrade: h2c\r\n\r\n")
        (status, headers, body), = parse_responses(await client.read_until_closed(), ["GET"])
        assert (status, json.loads(body), headers["connection"]) == (
            200, {"item_id": 5, "q": None}, "close")


async def test_shutdown_aborts_a_request_that_outlives_close_timeout() -> None:
    started = asyncio.Event()

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        started.set()
        await asyncio.Event().wait()       # never answers

    app = harpia.harpia(close_timeout=0.3)
    app.mount("/", asgi)
    server = await app.serve(port=0)
    client = await HttpClient.open(server.port)
    client.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.wait_for(started.wait(), 10)
    await asyncio.wait_for(server.stop(), 10)
    assert await client.read_until_closed() == b""


async def test_slow_body_gets_408() -> None:
    app = make_app()
    app.handshake_timeout = 0.5
    async with app.serve(port=0) as server:
        client = await HttpClient.open(server.port)
        client.send_raw(b"POST /echo-body HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
                        b"only ten b")                      # and the other 90 never come
        loop = asyncio.get_running_loop()
        started = loop.time()
        data = await client.read_until_closed()
        assert data.startswith(b"HTTP/1.1 408 "), data[:80]
        assert loop.time() - started < 8
