"""ServerWebSocket over real sockets: messages, close codes, states, handlers, errors.

Every test serves an app on 127.0.0.1 (port 0) and talks to it with ``websockets`` (the
independent peer) or with ``RawClient`` (bytes built by hand); conftest runs each test on
asyncio and on uvloop.
"""
from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from wsclient import (BINARY, CLOSE, PING, PONG, TEXT, Mailbox, RawClient, closed_code,
                      upgrade_request, ws_connect)

import harpia
from harpia import ServerWebSocket
from harpia._frames import serialize_frame, set_clock
from harpia.connection import AttributeBag


def echo(ws: ServerWebSocket[Any], message: str | bytes) -> None:
    ws.send(message)


# --------------------------------------------------------------------------- messages

async def test_text_arrives_as_str_and_binary_as_bytes_whole() -> None:
    app = harpia.harpia()
    seen: list[str | bytes] = []

    def message(ws: ServerWebSocket[Any], msg: str | bytes) -> None:
        seen.append(msg)
        ws.send(msg)

    app.ws("/echo", {"message": message})
    async with app.serve() as server, ws_connect(server.port, "/echo") as client:
        await client.send("héllo ✓")
        assert await client.recv() == "héllo ✓"
        await client.send(b"\x00\xff\x01")
        assert await client.recv() == b"\x00\xff\x01"
        await client.send(["frag", "ment", "ed"])          # three frames, one message
        assert await client.recv() == "fragmented"
        await client.send([b"ab", b"", b"cd"])
        assert await client.recv() == b"abcd"
        await client.send("")
        assert await client.recv() == ""
        big = bytes(range(256)) * 1000                      # 64-bit length on the way back
        await client.send(big)
        assert await client.recv() == big
    assert [type(m) for m in seen] == [str, bytes, str, bytes, str, bytes]
    assert seen[2] == "fragmented" and seen[3] == b"abcd"


async def test_send_returns_bytes_queued_and_takes_bytes_likes() -> None:
    app = harpia.harpia()
    results: list[object] = []

    def message(ws: ServerWebSocket[Any], msg: str | bytes) -> None:
        results.append(ws.send("hello"))
        results.append(ws.send(bytearray(b"ab")))
        results.append(ws.send(memoryview(b"xyz")))
        results.append(ws.send(b"x" * 200))
        try:
            ws.send(12)  # type: ignore[arg-type]
        except TypeError as exc:
            results.append(str(exc))

    app.ws("/", {"message": message})
    async with app.serve() as server, ws_connect(server.port) as client:
        await client.send("go")
        assert await client.recv() == "hello"
        assert await client.recv() == b"ab"
        assert await client.recv() == b"xyz"
        assert await client.recv() == b"x" * 200
    # Bytes queued: the whole frame (2-byte header, 4 with a 16-bit length).
    assert results[:4] == [7, 4, 5, 204]
    assert "int" in str(results[4])


async def test_message_handler_may_take_fewer_arguments() -> None:
    app = harpia.harpia()
    calls: list[str] = []
    app.ws("/one", {"message": lambda ws: ws.send("one arg")})
    app.ws("/none", {"message": lambda: calls.append("no args")})
    async with app.serve() as server:
        async with ws_connect(server.port, "/one") as client:
            await client.send("x")
            assert await client.recv() == "one arg"
        async with ws_connect(server.port, "/none") as client:
            await client.send("x")
            await client.send("y")
            await client.ping()           # the pong comes after both messages were handled
    assert calls == ["no args", "no args"]


# --------------------------------------------------------------------------- close codes

def recording_app(mailbox: Mailbox, **options: Any) -> harpia.App:
    """An echo app whose handlers report to ``mailbox``; "close:<code>" closes from the
    server, "terminate" drops the connection."""
    app = harpia.harpia()

    def message(ws: ServerWebSocket[Any], msg: str | bytes) -> None:
        if isinstance(msg, str) and msg.startswith("close:"):
            ws.close(int(msg[6:]), "done")
            mailbox.put("after_close", ws.readyState, ws.send("too late"), ws.dropped)
        elif msg == "terminate":
            ws.terminate()
        else:
            ws.send(msg)

    app.ws("/", {
        "open": lambda ws: mailbox.put("open", ws.readyState, ws.ready_state),
        "message": message,
        "close": lambda ws, code, reason: mailbox.put("close", code, reason, ws.readyState),
    }, **options)
    return app


async def test_peer_initiated_close_reports_the_peers_code() -> None:
    mailbox = Mailbox()
    async with recording_app(mailbox).serve() as server:
        async with ws_connect(server.port) as client:
            assert await mailbox.get() == ("open", harpia.OPEN, harpia.OPEN)
            await client.close(4000, "bye")
        assert client.close_code == 4000                    # the server echoed our code
        assert await mailbox.get() == ("close", 4000, "bye", harpia.CLOSED)
        assert await mailbox.quiet(0.1) == []               # exactly once


async def test_server_initiated_close_reports_the_servers_code() -> None:
    mailbox = Mailbox()
    async with recording_app(mailbox).serve() as server:
        async with ws_connect(server.port) as client:
            await client.send("close:4001")
            assert await closed_code(client) == (4001, "done")
        await mailbox.get_kind("open")
        # Right after close(): CLOSING, and a send is dropped (0) and counted.
        assert await mailbox.get() == ("after_close", harpia.CLOSING, 0, 1)
        assert await mailbox.get() == ("close", 4001, "done", harpia.CLOSED)
        assert await mailbox.quiet(0.1) == []


async def test_close_frame_without_code_is_1005_and_echoed_empty() -> None:
    mailbox = Mailbox()
    async with recording_app(mailbox).serve() as server:
        client = await RawClient.open(server.port)
        try:
            await client.send_close(None)
            frame = await client.recv_close()
            assert frame.payload == b""                     # no code comes back either
            await client.expect_eof()
        finally:
            client.close()
        await mailbox.get_kind("open")
        assert await mailbox.get() == ("close", 1005, "", harpia.CLOSED)


@pytest.mark.parametrize("how", ["fin", "reset"])
async def test_tcp_ending_without_close_frame_is_1006(how: str) -> None:
    mailbox = Mailbox()
    async with recording_app(mailbox).serve() as server:
        client = await RawClient.open(server.port)
        await client.send_text("ping")
        assert await client.recv_message() == "ping"
        client.close() if how == "fin" else client.reset()
        await mailbox.get_kind("open")
        assert await mailbox.get() == ("close", 1006, "", harpia.CLOSED)
        assert await mailbox.quiet(0.1) == []


async def test_terminate_drops_without_close_frame() -> None:
    mailbox = Mailbox()
    async with recording_app(mailbox).serve() as server:
        async with ws_connect(server.port) as client:
            await client.send("terminate")
            with pytest.raises(ConnectionClosed) as info:
                await client.recv()
            assert info.value.rcvd is None                  # no close frame came
            assert client.close_code == 1006
        await mailbox.get_kind("open")
        assert await mailbox.get() == ("close", 1006, "", harpia.CLOSED)


async def test_close_arguments_are_validated() -> None:
    app = harpia.harpia()
    outcomes: list[str] = []

    def message(ws: ServerWebSocket[Any], msg: str | bytes) -> None:
        for code, reason in ((1005, ""), (1006, ""), (999, ""), (5000, ""), (1000, "é" * 62)):
            try:
                ws.close(code, reason)
            except ValueError:
                outcomes.append(f"{code}: ValueError")
        outcomes.append(f"open: {ws.readyState}")
        ws.close(3000, "é" * 61)                            # 122 bytes: allowed

    app.ws("/", {"message": message})
    async with app.serve() as server, ws_connect(server.port) as client:
        await client.send("x")
        assert await closed_code(client) == (3000, "é" * 61)
    assert outcomes == ["1005: ValueError", "1006: ValueError", "999: ValueError",
                        "5000: ValueError", "1000: ValueError", "open: 1"]


async def test_close_handler_may_take_fewer_arguments() -> None:
    mailbox = Mailbox()

    class Handlers:
        def close(self, ws: ServerWebSocket[Any]) -> None:       # Bun's close(ws)
            mailbox.put("method", ws.readyState)

    app = harpia.harpia()
    app.ws("/method", Handlers())
    app.ws("/none", {"close": lambda: mailbox.put("none")})
    async with app.serve() as server:
        async with ws_connect(server.port, "/method"):
            pass
        assert await mailbox.get() == ("method", harpia.CLOSED)
        async with ws_connect(server.port, "/none"):
            pass
        assert await mailbox.get() == ("none",)


# --------------------------------------------------------------------------- handler forms

class EchoObject:
    """Handlers as methods, some async."""

    def __init__(self, mailbox: Mailbox) -> None:
        self.mailbox = mailbox

    async def open(self, ws: ServerWebSocket[Any]) -> None:
        await asyncio.sleep(0)
        ws.send("hello from an object")

    async def message(self, ws: ServerWebSocket[Any], message: str | bytes) -> None:
        await asyncio.sleep(0.001)
        ws.send(message)

    def close(self, ws: ServerWebSocket[Any], code: int, reason: str) -> None:
        self.mailbox.put("close", code, reason)


async def test_handlers_as_object_with_sync_and_async_methods() -> None:
    mailbox = Mailbox()
    app = harpia.harpia()
    app.ws("/", EchoObject(mailbox))
    async with app.serve() as server:
        async with ws_connect(server.port) as client:
            assert await client.recv() == "hello from an object"
            await client.send("a")
            await client.send(b"b")
            assert [await client.recv(), await client.recv()] == ["a", b"b"]
            await client.close(1000, "fine")
        assert await mailbox.get() == ("close", 1000, "fine")


async def test_async_close_handler_runs() -> None:
    mailbox = Mailbox()

    async def close(ws: ServerWebSocket[Any], code: int) -> None:
        await asyncio.sleep(0.01)
        mailbox.put("async close", code)

    app = harpia.harpia()
    app.ws("/", {"close": close})
    async with app.serve() as server:
        async with ws_connect(server.port) as client:
            await client.close(4100)
        assert await mailbox.get() == ("async close", 4100)


async def test_async_message_handler_finishes_before_the_next_message() -> None:
    running = 0
    overlaps = 0
    order: list[str] = []

    async def message(ws: ServerWebSocket[Any], msg: str | bytes) -> None:
        nonlocal running, overlaps
        running += 1
        overlaps += running > 1
        # Earlier messages sleep longer: delivered concurrently, they would finish reversed.
        await asyncio.sleep(0.002 * (20 - int(msg)))
        order.append(str(msg))
        ws.send(msg)
        running -= 1

    app = harpia.harpia()
    app.ws("/", {"message": message})
    async with app.serve() as server, ws_connect(server.port) as client:
        for i in range(20):
            await client.send(str(i))
        assert [await client.recv() for _ in range(20)] == [str(i) for i in range(20)]
    assert order == [str(i) for i in range(20)]
    assert overlaps == 0


async def test_messages_wait_for_an_async_open_handler() -> None:
    async def open_(ws: ServerWebSocket[Any]) -> None:
        await asyncio.sleep(0.05)
        ws.data.ready = True

    def message(ws: ServerWebSocket[Any], msg: str | bytes) -> None:
        ws.send(f"{msg} ready={getattr(ws.data, 'ready', False)}")

    app = harpia.harpia()
    app.ws("/", {"open": open_, "message": message})
    async with app.serve() as server:
        client = await RawClient.connect(server.port)
        try:
            # The request and a frame in one write: the frame reaches the server at once.
            await client.send(upgrade_request("/") + serialize_frame(TEXT, "early", mask=b"abcd"))
            assert (await client.read_response()).status == 101
            await client.send_text("later")
            assert await client.recv_message() == "early ready=True"
            assert await client.recv_message() == "later ready=True"
        finally:
            client.close()


async def test_reading_pauses_while_an_async_handler_holds_a_backlog() -> None:
    gate = asyncio.Event()
    received: list[int] = []
    holder: list[ServerWebSocket[Any]] = []

    async def message(ws: ServerWebSocket[Any], msg: str | bytes) -> None:
        await gate.wait()
        received.append(int(msg[:6]))

    app = harpia.harpia()
    app.ws("/", {"open": holder.append, "message": message}, max_inbound_backlog=4096)
    count = 2000
    blob = b"".join(serialize_frame(TEXT, f"{i:06d}" + "x" * 1000, mask=b"abcd")
                    for i in range(count))
    async with app.serve() as server:
        client = await RawClient.connect(server.port)
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        try:
            assert (await client.handshake("/")).status == 101
            sending = asyncio.ensure_future(client.loop.sock_sendall(client.sock, blob))
            await asyncio.sleep(0.3)
            ws = holder[0]
            # 2 MB cannot all be buffered: the server stopped reading, so the send blocks.
            assert not sending.done()
            assert ws.reading_paused
            assert received == []
            # Held: at most the backlog limit plus the one read that crossed it.
            assert ws.held_bytes <= 4096 + 256 * 1024
            gate.set()
            await asyncio.wait_for(sending, 10)
            while len(received) < count:
                await asyncio.sleep(0.01)
            assert received == list(range(count))
            assert not ws.reading_paused and ws.held_bytes == 0
        finally:
            client.close()


# --------------------------------------------------------------------------- ready states, ping, pong

async def test_ready_states_through_the_life_of_a_connection() -> None:
    mailbox = Mailbox()
    async with recording_app(mailbox).serve() as server:
        async with ws_connect(server.port) as client:
            await client.send("close:1000")
            await closed_code(client)
        assert await mailbox.get() == ("open", 1, 1)
        assert (await mailbox.get())[:2] == ("after_close", harpia.CLOSING)
        assert (await mailbox.get())[-1] == harpia.CLOSED
    assert (harpia.CONNECTING, harpia.OPEN, harpia.CLOSING, harpia.CLOSED) == (0, 1, 2, 3)


async def test_ping_and_pong_handlers() -> None:
    mailbox = Mailbox()

    def message(ws: ServerWebSocket[Any], msg: str | bytes) -> None:
        mailbox.put("ping sent", ws.ping(b"xyz"))
        try:
            ws.ping(b"x" * 126)
        except ValueError:
            mailbox.put("too long")

    app = harpia.harpia()
    app.ws("/", {
        "message": message,
        "ping": lambda ws, data: mailbox.put("ping", data),
        "pong": lambda ws, data: mailbox.put("pong", data),
    })
    async with app.serve() as server, ws_connect(server.port) as client:
        waiter = await client.ping(b"abc")
        await asyncio.wait_for(waiter, 5)             # harpia answered with a pong itself
        assert await mailbox.get() == ("ping", b"abc")
        await client.send("ping me")                  # websockets answers harpia's ping
        assert await mailbox.get() == ("ping sent", 5)
        assert await mailbox.get() == ("too long",)
        assert await mailbox.get() == ("pong", b"xyz")


async def test_raw_ping_gets_a_pong_with_the_same_payload() -> None:
    app = harpia.harpia()
    app.ws("/", {})
    async with app.serve() as server:
        client = await RawClient.open(server.port)
        try:
            await client.send_frame(PING, b"\x01\x02")
            frame = await client.recv_frame()
            assert (frame.opcode, frame.payload) == (PONG, b"\x01\x02")
            await client.send_frame(PONG, b"unsolicited")           # ignored, not an error
            await client.send_close(1000)
            frame = await client.recv_frame()
            assert (frame.opcode, frame.close_code) == (CLOSE, 1000)
        finally:
            client.close()


# --------------------------------------------------------------------------- request facts

def test_header_fields_pack_and_unpack_whole() -> None:
    from harpia.connection import pack_header_fields, unpack_header_fields
    from harpia.http_head import Headers

    fields = [("Host", "h:1"), ("X-Empty", ""), ("Cookie", "a=1"), ("cookie", "b=2"),
              ("X-Latin", "caf\xe9 \t: colon"), ("X", "")]
    back = unpack_header_fields(pack_header_fields(Headers(fields)))
    assert back.raw_items() == fields
    assert back.get_all("COOKIE") == ["a=1", "b=2"] and back["x-empty"] == "" and back["x"] == ""
    assert unpack_header_fields(pack_header_fields(Headers())).raw_items() == []


async def test_a_static_route_shares_its_path_string() -> None:
    paths: list[str] = []
    app = harpia.harpia()
    app.ws("/static/path", {"open": lambda ws: paths.append(ws.path)})
    async with app.serve() as server:
        clients = [await RawClient.open(server.port, "/static/path?a=1") for _ in range(2)]
        for client in clients:
            client.close()
    assert paths == ["/static/path", "/static/path"]
    assert paths[0] is paths[1]     # one string for all the route's connections, not a copy each


async def test_params_of_a_static_route_are_an_empty_dict_of_its_own() -> None:
    seen: list[Any] = []

    def open_(ws: ServerWebSocket[Any]) -> None:
        ws.params["mine"] = str(len(seen))      # each connection's dict is its own
        seen.append(ws)

    app = harpia.harpia()
    app.ws("/static", {"open": open_})
    async with app.serve() as server:
        clients = [await RawClient.open(server.port, "/static") for _ in range(2)]
        for client in clients:
            client.close()
    assert [ws.params for ws in seen] == [{"mine": "0"}, {"mine": "1"}]
    assert seen[0].params is seen[0].params


async def test_request_facts_long_after_the_handshake() -> None:
    """What an open connection keeps of its request (packed until ws.headers is read)
    still answers url, path, query and headers, whole, in any order, at any time."""
    seen: dict[str, Any] = {}

    def message(ws: ServerWebSocket[Any], msg: str | bytes) -> None:
        if msg == "url-first":
            seen.update(url=ws.url, query=ws.query, path=ws.path, data_url=ws.data.url)
        else:
            headers = ws.headers
            seen.update(kept=headers is ws.headers, cookies=headers.get_all("cookie"),
                        latin=headers["x-latin"], empty=headers["x-empty"], raw=headers.raw_items(),
                        url_after=ws.url)
        ws.send("ok")

    app = harpia.harpia()
    app.ws("/p/:id", {"message": message})
    extra = [("X-Empty", ""), ("Cookie", "a=1"), ("COOKIE", "b=2"), ("X-Latin", "caf\xe9")]
    async with app.serve() as server:
        client = await RawClient.open(server.port, "/p/7?q=%C3%A9&q=2", host="example.test:81", headers=extra)
        try:
            for text in ("url-first", "headers"):
                await client.send_text(text)
                frame = await client.recv_frame()
                assert (frame.opcode, frame.payload) == (TEXT, b"ok")
        finally:
            client.close()
    url = "ws://example.test:81/p/7?q=%C3%A9&q=2"
    assert seen["url"] == seen["data_url"] == seen["url_after"] == url
    assert seen["query"] == {"q": "\xe9"} and seen["path"] == "/p/7"
    assert seen["kept"] is True
    assert seen["cookies"] == ["a=1", "b=2"] and seen["latin"] == "caf\xe9" and seen["empty"] == ""
    assert seen["raw"][0] == ("Host", "example.test:81") and seen["raw"][-4:] == extra


async def test_url_path_params_query_headers_address_subprotocol() -> None:
    seen: dict[str, Any] = {}

    def open_(ws: ServerWebSocket[Any]) -> None:
        seen.update(url=ws.url, path=ws.path, params=ws.params, query=ws.query,
                    header=ws.headers["x-custom"], header_case=ws.headers["X-CUSTOM"],
                    remote=ws.remote_address, subprotocol=ws.subprotocol,
                    data=ws.data, data_url=ws.data.url, buffered=ws.buffered_amount)

    app = harpia.harpia()
    app.ws("/room/:roomId", {"open": open_}, subprotocols=["chat.v2", "chat.v1"])
    async with app.serve() as server:
        async with ws_connect(server.port, "/room/42?x=1&x=2&empty=&q=a%20b",
                              subprotocols=["chat.v1", "chat.v2"],
                              additional_headers={"X-Custom": "value"}) as client:
            assert client.subprotocol == "chat.v2"          # the server's preference wins
            client_port = client.local_address[1]
            await client.send("sync")                       # open has run by now
        url = f"ws://127.0.0.1:{server.port}/room/42?x=1&x=2&empty=&q=a%20b"
        assert seen["url"] == url
        assert seen["path"] == "/room/42"
        assert seen["params"] == {"roomId": "42"}
        assert seen["query"] == {"x": "1", "empty": "", "q": "a b"}
        assert seen["header"] == seen["header_case"] == "value"
        assert seen["remote"] == ("127.0.0.1", client_port)
        assert seen["subprotocol"] == "chat.v2"
        assert isinstance(seen["data"], AttributeBag) and seen["data_url"] == url
        assert seen["buffered"] == 0


async def test_no_subprotocol_when_none_matches() -> None:
    seen: list[str | None] = []
    app = harpia.harpia()
    app.ws("/", {"open": lambda ws: seen.append(ws.subprotocol)}, subprotocols=["a"])
    app.ws("/any", {"open": lambda ws: seen.append(ws.subprotocol)})
    async with app.serve() as server:
        async with ws_connect(server.port, "/", subprotocols=["b"]) as client:
            assert client.subprotocol is None         # accepted, without the header
        async with ws_connect(server.port, "/any", subprotocols=["b"]) as client:
            assert client.subprotocol is None
    assert seen == [None, None]


class Profile:
    def __init__(self) -> None:
        self.name = "anonymous"


async def test_data_from_factory_hook_and_default() -> None:
    seen: dict[str, Any] = {}

    def record(route: str) -> Any:
        return lambda ws: seen.__setitem__(route, ws.data)

    async def async_hook(request: harpia.Request) -> dict[str, str]:
        await asyncio.sleep(0)
        return {"user": request.query["user"], "path": request.path,
                "room": request.params["room"], "ip": request.remote_address[0]}

    app = harpia.harpia()
    app.ws("/factory", {"open": record("factory")}, data=Profile)
    app.ws("/hook", {"open": record("hook")},
           upgrade=lambda request: {"token": request.headers["authorization"]})
    app.ws("/async/:room", {"open": record("async")}, upgrade=async_hook)
    app.ws("/none", {"open": record("none")}, upgrade=lambda request: None, data=Profile)
    async with app.serve() as server:
        for path, headers in (("/factory", {}), ("/hook", {"Authorization": "Bearer t"}),
                              ("/async/r1?user=ann", {}), ("/none", {})):
            async with ws_connect(server.port, path, additional_headers=headers) as client:
                await client.ping()
    assert isinstance(seen["factory"], Profile) and seen["factory"].name == "anonymous"
    assert seen["hook"] == {"token": "Bearer t"}
    assert seen["async"] == {"user": "ann", "path": "/async/r1", "room": "r1", "ip": "127.0.0.1"}
    assert isinstance(seen["none"], Profile)                # None keeps the default


async def test_each_connection_gets_its_own_data() -> None:
    datas: list[Any] = []
    app = harpia.harpia()
    app.ws("/", {"open": lambda ws: datas.append(ws.data)}, data=Profile)
    async with app.serve() as server:
        async with ws_connect(server.port) as a, ws_connect(server.port) as b:
            await a.ping()
            await b.ping()
    assert len(datas) == 2 and datas[0] is not datas[1]


# --------------------------------------------------------------------------- errors

async def test_handler_exception_goes_to_error_and_connection_stays_open() -> None:
    mailbox = Mailbox()

    def message(ws: ServerWebSocket[Any], msg: str | bytes) -> None:
        if msg == "boom":
            raise ValueError("sync boom")
        ws.send(msg)

    async def amessage(ws: ServerWebSocket[Any], msg: str | bytes) -> None:
        await asyncio.sleep(0)
        if msg == "boom":
            raise KeyError("async boom")
        ws.send(msg)

    def error(ws: ServerWebSocket[Any], exc: BaseException) -> None:
        mailbox.put("error", type(exc), str(exc), ws.readyState)

    app = harpia.harpia()
    app.ws("/sync", {"message": message, "error": error})
    app.ws("/async", {"message": amessage, "error": error})
    async with app.serve() as server:
        for path, kind, text in (("/sync", ValueError, "sync boom"),
                                 ("/async", KeyError, "'async boom'")):
            async with ws_connect(server.port, path) as client:
                await client.send("boom")
                assert await mailbox.get() == ("error", kind, text, harpia.OPEN)
                await client.send("still here")
                assert await client.recv() == "still here"


async def test_error_in_open_and_close_handlers_reach_error() -> None:
    mailbox = Mailbox()

    def open_(ws: ServerWebSocket[Any]) -> None:
        raise RuntimeError("open failed")

    def close(ws: ServerWebSocket[Any]) -> None:
        raise RuntimeError("close failed")

    app = harpia.harpia()
    app.ws("/", {"open": open_, "close": close, "message": echo,
                 "error": lambda ws, exc: mailbox.put("error", str(exc))})
    async with app.serve() as server:
        async with ws_connect(server.port) as client:
            await client.send("alive")
            assert await client.recv() == "alive"
        assert await mailbox.get() == ("error", "open failed")
        assert await mailbox.get() == ("error", "close failed")


@pytest.mark.parametrize("form", ["sync", "async"])
async def test_without_error_handler_the_error_is_logged_and_closed_1011(
        form: str, caplog: pytest.LogCaptureFixture) -> None:
    mailbox = Mailbox()

    def message(ws: ServerWebSocket[Any], msg: str | bytes) -> None:
        raise ValueError("unhandled")

    async def amessage(ws: ServerWebSocket[Any], msg: str | bytes) -> None:
        raise ValueError("unhandled")

    app = harpia.harpia()
    app.ws("/", {"message": message if form == "sync" else amessage,
                 "close": lambda ws, code, reason: mailbox.put("close", code, reason)})
    async with app.serve() as server, ws_connect(server.port) as client:
        await client.send("x")
        code, _ = await closed_code(client)
        assert code == 1011
        assert await mailbox.get() == ("close", 1011, "internal error")
    errors = [r for r in caplog.records if r.name == "harpia" and r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None and str(errors[0].exc_info[1]) == "unhandled"


@pytest.mark.parametrize("form", ["sync", "async"])
async def test_an_error_handler_that_raises_is_logged_and_closed_1011(
        form: str, caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []

    def error(ws: ServerWebSocket[Any], exc: BaseException) -> None:
        calls.append(str(exc))
        raise RuntimeError("error handler failed")

    async def aerror(ws: ServerWebSocket[Any], exc: BaseException) -> None:
        calls.append(str(exc))
        raise RuntimeError("error handler failed")

    def message(ws: ServerWebSocket[Any], msg: str | bytes) -> None:
        raise ValueError("first")

    app = harpia.harpia()
    app.ws("/", {"message": message, "error": error if form == "sync" else aerror})
    async with app.serve() as server, ws_connect(server.port) as client:
        await client.send("x")
        code, _ = await closed_code(client)
        assert code == 1011
    assert calls == ["first"]                   # called once, not again for its own failure
    errors = [r for r in caplog.records if r.name == "harpia" and r.levelno == logging.ERROR]
    assert [str(r.exc_info[1]) for r in errors if r.exc_info] == ["error handler failed"]


@pytest.mark.parametrize("case", ["unmasked", "bad utf-8", "too big", "reserved opcode"])
async def test_protocol_violations_close_with_the_rfc_code(case: str) -> None:
    mailbox = Mailbox()
    frames = {
        "unmasked": (serialize_frame(TEXT, "hi"), 1002),
        "bad utf-8": (serialize_frame(TEXT, b"\xff\xfe", mask=b"abcd"), 1007),
        "too big": (serialize_frame(BINARY, b"x" * 101, mask=b"abcd"), 1009),
        "reserved opcode": (serialize_frame(3, b"", mask=b"abcd"), 1002),
    }
    data, expected = frames[case]
    app = harpia.harpia()
    app.ws("/", {"message": echo,
                 "close": lambda ws, code, reason: mailbox.put("close", code)},
           max_payload_length=100)
    async with app.serve() as server:
        client = await RawClient.open(server.port)
        try:
            await client.send_frame(BINARY, b"x" * 100)       # exactly the limit: fine
            assert await client.recv_message() == b"x" * 100
            await client.send(data)
            frame = await client.recv_close()
            assert frame.close_code == expected
            await client.expect_eof()
        finally:
            client.close()
        assert await mailbox.get() == ("close", expected)


# --------------------------------------------------------------------------- idle timeout

async def test_idle_connection_is_closed_with_1001() -> None:
    mailbox = Mailbox()
    app = harpia.harpia()
    app.ws("/", {"close": lambda ws, code, reason: mailbox.put("close", code, reason)},
           idle_timeout=0.3, send_pings=False)
    async with app.serve() as server, ws_connect(server.port) as client:
        started = asyncio.get_running_loop().time()
        assert await closed_code(client, 3) == (1001, "idle timeout")
        elapsed = asyncio.get_running_loop().time() - started
        assert 0.2 <= elapsed < 1.5
        assert await mailbox.get() == ("close", 1001, "idle timeout")


async def test_pings_keep_a_quiet_client_open() -> None:
    mailbox = Mailbox()
    app = harpia.harpia()
    app.ws("/", {"pong": lambda ws, data: mailbox.put("pong")}, idle_timeout=0.4)
    async with app.serve() as server, ws_connect(server.port) as client:
        await asyncio.sleep(1.0)                     # 2.5 idle timeouts without a message
        await client.send("still open")              # raises if the server closed us
        await client.ping()
        assert len(mailbox.kinds("pong")) >= 2


async def test_idle_clock_is_fresh_for_the_first_connections() -> None:
    # A process whose coarse clock was never set (or set long ago by another listener):
    # a connection made before the first sweep must not look idle since the epoch.
    set_clock(0)
    mailbox = Mailbox()
    app = harpia.harpia()
    app.ws("/", {"message": echo, "close": lambda ws, code: mailbox.put("close", code)},
           idle_timeout=2, send_pings=False)
    async with app.serve() as server, ws_connect(server.port) as client:
        await asyncio.sleep(0.4)                     # past the first sweep (every 0.25 s)
        await client.send("alive")
        assert await client.recv() == "alive"
        assert mailbox.log == []


async def test_remote_address_is_known_in_close_after_the_socket_is_gone() -> None:
    # The address is read lazily; a close handler that first asks after an abrupt
    # disconnect (the socket already closed) must still get it.
    closed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def on_close(ws: ServerWebSocket[Any], code: int, reason: str) -> None:
        closed.set_result((code, ws.remote_address))

    app = harpia.harpia()
    app.ws("/x", {"close": on_close})
    async with app.serve() as server:
        client = await RawClient.open(server.port, "/x")
        local_port = client.local_port
        client.reset()
        code, address = await asyncio.wait_for(closed, 5)
    assert code == 1006
    assert address == ("127.0.0.1", local_port)
