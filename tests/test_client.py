"""harpia.connect against harpia's own server, over real sockets (asyncio and uvloop)."""
from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator
from typing import Any

import pytest

import harpia
from harpia import ClientWebSocket, ConnectionClosed, HandshakeError, Reject
from harpia.errors import ConfigurationError


def echo_app(**options: Any) -> harpia.App:
    app = harpia.harpia()
    app.ws("/echo", {"message": lambda ws, m: ws.send(m)}, **options)

    def hello(ws: Any) -> None:
        ws.send("hello")
        ws.close(4001, "bye now")
    app.ws("/hello-bye", {"open": hello})

    def secure(request: Any) -> None:
        if request.query.get("token") != "s3cret":
            raise Reject(401, "missing token", {"WWW-Authenticate": "Bearer"})
    app.ws("/secure", {"message": lambda ws, m: ws.send(m)}, upgrade=secure)
    return app


@contextlib.asynccontextmanager
async def serving(app: harpia.App) -> AsyncIterator[str]:
    async with app.serve(port=0) as server:
        yield f"ws://127.0.0.1:{server.port}"


async def test_recv_echo_text_and_binary() -> None:
    async with serving(echo_app(subprotocols=["chat", "other"])) as base:
        async with harpia.connect(f"{base}/echo", subprotocols=["chat"]) as ws:
            assert isinstance(ws, ClientWebSocket)
            assert ws.ready_state == harpia.OPEN and ws.readyState == 1
            assert ws.subprotocol == "chat" and ws.extensions is None
            assert ws.response_headers["upgrade"].lower() == "websocket"
            assert ws.send("héllo") == 2 + 4 + len("héllo".encode())   # header + mask + data
            assert await ws.recv() == "héllo"
            big = bytes(range(256)) * 1000
            assert ws.send(big) > len(big)
            assert await ws.recv() == big
            assert ws.buffered_amount == 0
        assert ws.ready_state == harpia.CLOSED
        assert await ws.wait_closed() == (1000, "")
        assert ws.send("late") == 0


async def test_await_form_and_explicit_close() -> None:
    async with serving(echo_app()) as base:
        ws = await harpia.connect(f"{base}/echo")
        ws.send("one")
        assert await ws.recv() == "one"
        ws.close(4000, "done here")
        assert ws.ready_state == harpia.CLOSING
        assert await ws.wait_closed() == (4000, "done here")
        assert (ws.close_code, ws.close_reason) == (4000, "done here")
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
        assert info.value.code == 4000


async def test_a_cancelled_wait_closed_leaves_the_other_waiters() -> None:
    async with serving(echo_app()) as base:
        ws = await harpia.connect(f"{base}/echo")
        first = asyncio.ensure_future(ws.wait_closed())
        second = asyncio.ensure_future(ws.wait_closed())
        cancelled = asyncio.ensure_future(ws.wait_closed())
        await asyncio.sleep(0)
        cancelled.cancel()
        for _ in range(3):      # cancelled waits and timed-out waits do not pile up
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(ws.wait_closed(), 0.01)
        assert not first.done() and not second.done()
        ws.close(4002, "enough")
        assert await asyncio.wait_for(first, 10) == (4002, "enough")
        assert await second == (4002, "enough") and cancelled.cancelled()
        assert await ws.wait_closed() == (4002, "enough")    # and after the end, at once


async def test_address_on_own_io_and_name_on_the_loop_transport() -> None:
    """An IP literal runs on harpia's socket I/O, a host name on the loop's transport; both
    echo, both close cleanly."""
    from harpia._transport import SocketTransport
    async with serving(echo_app()) as base:
        port = base.rsplit(":", 1)[1]
        for url, own in ((f"{base}/echo", True), (f"ws://localhost:{port}/echo", False)):
            try:
                ws = await harpia.connect(url)
            except OSError:          # localhost resolving to ::1 only, where nobody listens
                assert not own
                continue
            assert isinstance(ws.transport, SocketTransport) is own
            ws.send(b"x" * 70000)
            assert await ws.recv() == b"x" * 70000
            ws.close()
            assert await ws.wait_closed() == (1000, "")


async def test_own_io_peer_address_and_refused_connect() -> None:
    """The connect started in C: the transport knows its peer as accept() would say it, and
    a refused connect is a ConnectionRefusedError naming where it went."""
    async with serving(echo_app()) as base:
        port = int(base.rsplit(":", 1)[1])
        async with harpia.connect(f"{base}/echo") as ws:
            assert ws.transport is not None
            assert ws.transport.get_extra_info("peername") == ("127.0.0.1", port)
    with pytest.raises(ConnectionRefusedError, match=f"127.0.0.1:{port}"):
        await harpia.connect(f"{base}/echo")


async def test_connect_still_in_progress_when_the_request_is_written() -> None:
    """A server whose accept queue is full drops our SYN: the connect is still going on when
    the upgrade request is written, which waits in the transport until the kernel retries
    (after about a second) and the socket turns writable."""
    listener = socket.socket()
    filler = socket.socket()
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)                      # the queue holds one connection...
        port = listener.getsockname()[1]
        filler.connect(("127.0.0.1", port))     # ...this one, never accepted for now
        started = asyncio.get_running_loop().time()
        opening = asyncio.ensure_future(harpia.connect(f"ws://127.0.0.1:{port}/echo"))
        await asyncio.sleep(0.2)
        assert not opening.done()
        listener.accept()[0].close()
        async with echo_app().serve(sock=listener):
            ws = await asyncio.wait_for(opening, 30)
            assert asyncio.get_running_loop().time() - started > 0.5   # the SYN was retried
            ws.send("late but there")
            assert await ws.recv() == "late but there"
            ws.close()
            assert await ws.wait_closed() == (1000, "")
    finally:
        filler.close()
        listener.close()


async def test_server_closes_first() -> None:
    async with serving(echo_app()) as base:
        ws = await harpia.connect(f"{base}/hello-bye")
        assert await ws.recv() == "hello"
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
        assert (info.value.code, info.value.reason) == (4001, "bye now")
        assert await ws.wait_closed() == (4001, "bye now")


async def test_async_for_ends_on_normal_closure() -> None:
    app = harpia.harpia()

    def burst(ws: Any) -> None:
        for i in range(100):
            ws.send(f"m{i}")
        ws.close(1000)
    app.ws("/burst", {"open": burst})
    async with serving(app) as base:
        async with harpia.connect(f"{base}/burst") as ws:
            got = [m async for m in ws]
        assert got == [f"m{i}" for i in range(100)]


async def test_handlers_fast_path() -> None:
    events: list[Any] = []
    finished = asyncio.Event()
    app = harpia.harpia()
    app.ws("/echo", {"message": lambda ws, m: ws.send(m),
                     "ping": lambda ws, data: ws.send(b"saw ping " + data)})

    class Handlers:
        def open(self, ws: ClientWebSocket) -> None:
            events.append("open")
            ws.send("a")

        def message(self, ws: ClientWebSocket, message: str | bytes) -> None:
            events.append(message)
            if message == "a":
                ws.ping(b"p1")
            elif message == b"saw ping p1":
                ws.close(1000, "enough")

        def pong(self, ws: ClientWebSocket, data: bytes) -> None:
            events.append(("pong", data))

        def close(self, ws: ClientWebSocket, code: int, reason: str) -> None:
            events.append(("close", code, reason))
            finished.set()

    async with serving(app) as base:
        ws = await harpia.connect(f"{base}/echo", Handlers())
        await asyncio.wait_for(finished.wait(), 10)
        assert events == ["open", "a", b"saw ping p1", ("pong", b"p1"), ("close", 1000, "enough")] \
            or events == ["open", "a", ("pong", b"p1"), b"saw ping p1", ("close", 1000, "enough")]
        with pytest.raises(ConfigurationError, match="message' handler"):
            await ws.recv()


async def test_async_message_handler_keeps_order() -> None:
    got: list[str | bytes] = []
    done = asyncio.Event()

    async def message(ws: ClientWebSocket, m: str | bytes) -> None:
        await asyncio.sleep(0.001)
        got.append(m)
        if len(got) == 50:
            done.set()

    async with serving(echo_app()) as base:
        async with harpia.connect(f"{base}/echo", {"message": message}) as ws:
            for i in range(50):
                ws.send(str(i))
            await asyncio.wait_for(done.wait(), 10)
    assert got == [str(i) for i in range(50)]


async def test_handler_error_goes_to_error_then_1011_without_one() -> None:
    errors: list[BaseException] = []
    async with serving(echo_app()) as base:
        def bad(ws: ClientWebSocket, m: str | bytes) -> None:
            raise RuntimeError(f"cannot {m}")
        ws = await harpia.connect(f"{base}/echo", {"message": bad,
                                                   "error": lambda ws, e: errors.append(e)})
        ws.send("x")
        ws.send("y")
        for _ in range(200):
            if len(errors) == 2:
                break
            await asyncio.sleep(0.01)
        assert [str(e) for e in errors] == ["cannot x", "cannot y"]
        assert ws.ready_state == harpia.OPEN          # the error handler decides
        ws.close()
        assert await ws.wait_closed() == (1000, "")

        ws = await harpia.connect(f"{base}/echo", {"message": bad})
        ws.send("z")
        assert await asyncio.wait_for(ws.wait_closed(), 10) == (1011, "internal error")


async def test_rejected_upgrade_raises_handshake_error() -> None:
    async with serving(echo_app()) as base:
        with pytest.raises(HandshakeError) as info:
            await harpia.connect(f"{base}/secure")
        assert info.value.status == 401
        assert "missing token" in info.value.message
        assert info.value.headers.get("WWW-Authenticate") == "Bearer"
        with pytest.raises(HandshakeError) as info:
            await harpia.connect(f"{base}/nowhere")
        assert info.value.status == 404
        async with harpia.connect(f"{base}/secure?token=s3cret") as ws:
            ws.send("in")
            assert await ws.recv() == "in"


async def test_inbound_buffering_is_bounded_and_pauses_reading() -> None:
    """A server that sends faster than the application reads: the client queues at most
    max_queue messages, then stops reading; the server sees backpressure, not the client
    growing; everything arrives in order once the application reads."""
    results: list[int] = []
    opened: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    app = harpia.harpia()
    app.ws("/flood", {"open": lambda ws: opened.set_result(ws)}, backpressure_limit=64 * 1024)
    chunk = b"x" * 1024
    async with serving(app) as base:
        async with harpia.connect(f"{base}/flood", max_queue=8) as ws:
            server_ws = await opened
            sent = 0
            for _ in range(10_000):
                result = server_ws.send(chunk)
                results.append(result)
                if result <= 0:
                    break
                sent += 1
                if sent % 64 == 0:
                    await asyncio.sleep(0.01)      # let the bytes move
            assert results[-1] in (-1, 0), "the client never pushed back"
            await asyncio.sleep(0.2)
            assert len(ws._queue) <= 8
            assert ws.held_bytes <= 64 * 1024 + 65536
            assert ws.reading_paused
            for _ in range(sent):
                assert await asyncio.wait_for(ws.recv(), 10) == chunk


async def test_send_backpressure_and_drain() -> None:
    """The server stops reading: sends return n, then -1 once, then 0; drain comes
    once the server reads again."""
    opened: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    received = 0
    app = harpia.harpia()

    def count(ws: Any, m: Any) -> None:
        nonlocal received
        received += 1
    app.ws("/sink", {"open": lambda ws: opened.set_result(ws), "message": count})
    drained = asyncio.Event()
    async with serving(app) as base:
        ws = await harpia.connect(f"{base}/sink", {"drain": lambda ws: drained.set()},
                                  backpressure_limit=32 * 1024)
        server_ws = await opened
        server_ws.transport.pause_reading()
        payload = b"y" * 4096
        results = []
        for _ in range(100_000):
            r = ws.send(payload)
            results.append(r)
            if r == 0:
                break
            if r > 0:
                await asyncio.sleep(0)
        assert results[0] > 0 and -1 in results and results[-1] == 0
        assert results.index(-1) == len(results) - 2 or all(r == 0 for r in results[results.index(-1) + 1:])
        assert ws.buffered_amount >= 32 * 1024
        server_ws.transport.resume_reading()
        await asyncio.wait_for(drained.wait(), 10)
        await ws.drain()
        assert ws.send(b"after drain") > 0
        ws.close()
        await ws.wait_closed()


async def test_oversized_message_closes_with_1009() -> None:
    async with serving(echo_app()) as base:
        ws = await harpia.connect(f"{base}/echo", max_payload_length=1000)
        ws.send(b"z" * 999)
        assert await ws.recv() == b"z" * 999
        ws.send(b"z" * 1001)                     # echoed back: too big for us
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
        assert info.value.code == 1009
        assert await ws.wait_closed() == (1009, info.value.reason)


async def test_deflate_with_harpia_server() -> None:
    async with serving(echo_app(per_message_deflate=True)) as base:
        async with harpia.connect(f"{base}/echo", per_message_deflate=True) as ws:
            assert ws.extensions is not None and "permessage-deflate" in ws.extensions
            text = "compress me " * 2000
            n = ws.send(text)
            assert 0 < n < len(text) // 10
            assert await ws.recv() == text
        async with harpia.connect(f"{base}/hello-bye", per_message_deflate=True) as ws:
            assert ws.extensions is None              # that route has no deflate
            assert await ws.recv() == "hello"


async def test_busy_poll() -> None:
    async with serving(echo_app()) as base:
        async with harpia.connect(f"{base}/echo", busy_poll=0.0002) as ws:
            for i in range(20):
                ws.send(f"poll {i}")
                assert await ws.recv() == f"poll {i}"
    with pytest.raises(ConfigurationError, match="busy_poll"):
        harpia.connect("ws://x/", busy_poll=2)


async def test_open_timeout_and_refused() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 16)
        await asyncio.sleep(30)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        with pytest.raises(TimeoutError, match="open_timeout"):
            await harpia.connect(f"ws://127.0.0.1:{port}/", open_timeout=0.3)
        # The caller's own cancellation stays a cancellation, and a caller's own deadline
        # shorter than open_timeout is the caller's.
        opening = asyncio.ensure_future(harpia.connect(f"ws://127.0.0.1:{port}/"))
        await asyncio.sleep(0.05)
        opening.cancel()
        with pytest.raises(asyncio.CancelledError):
            await opening
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(harpia.connect(f"ws://127.0.0.1:{port}/"), 0.1)
        server.close()
    with pytest.raises(OSError):
        await harpia.connect(f"ws://127.0.0.1:{port}/")


async def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="not a WebSocket URL"):
        harpia.connect("http://x/")
    with pytest.raises(ConfigurationError, match="max_queue"):
        harpia.connect("ws://x/", max_queue=0)
    with pytest.raises(ConfigurationError, match="open_timeout"):
        harpia.connect("ws://x/", open_timeout=-1)
    with pytest.raises(ConfigurationError, match="unknown handler 'mesage'"):
        harpia.connect("ws://x/", {"mesage": print})
    with pytest.raises(ValueError, match="header"):
        harpia.connect("ws://x/", headers={"X": "1\r\nY: 2"})
    with pytest.raises(ConfigurationError, match="unknown tls option"):
        harpia.connect("wss://x/", tls={"verify": False})
    with pytest.raises(ConfigurationError, match="not a wss"):
        await harpia.connect("ws://127.0.0.1:1/", tls=ssl.create_default_context())
