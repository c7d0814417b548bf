"""An in-process test client: drive an app from a test without a port or threads.

    async with TestClient(app) as client:
        ws = await client.connect("/room/1", headers={"Authorization": "Bearer t"})
        await ws.send("hello")
        assert await ws.receive() == "hello"
        await ws.close()
        assert ws.close_code == 1000

Each connection is a socket pair: the server half goes through the app's real upgrade
stage and ``ServerWebSocket``, the client half speaks RFC 6455 with harpia's frame engine
in the client role.  ``slow=True`` (or ``ws.pause_reading()``) stops the client from
reading, with small socket buffers, so ``send`` returning -1/0 and ``drain`` can be
observed in a test.
"""
from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._frames import FrameEngine
from .app import App
from .client_handshake import ClientHandshake, parse_url
from .errors import ConnectionClosed, HandshakeError
from .http_protocol import HttpProtocol
from .server import Listener

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

__all__ = ["TestClient", "TestWebSocket"]

_CLOSED = object()


class TestWebSocket(FrameEngine, asyncio.Protocol):
    """The client side of one test connection."""

    __test__ = False  # not a pytest test class

    def __init__(self, *, max_payload_length: int) -> None:
        super().__init__(client=True, max_payload_length=max_payload_length,
                         backpressure_limit=1 << 62)
        self.transport: asyncio.Transport | None = None
        self.status: int | None = None
        self.response_headers: dict[str, str] = {}
        self.subprotocol: str | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        self._opening: ClientHandshake | None = None
        self._handshake: asyncio.Future[None] | None = None
        self._messages: asyncio.Queue[Any] = asyncio.Queue()
        self._closed: asyncio.Future[None] | None = None

    # asyncio protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        loop = asyncio.get_running_loop()
        self._closed = loop.create_future()
        self.attach(self.transport.write)  # type: ignore[union-attr]

    def data_received(self, data: ReadableBuffer) -> None:
        if self.status is None:
            self._read_response(bytes(data), eof=False)
            return
        self.feed(data)

    def _read_response(self, data: bytes, eof: bool) -> None:
        # The same checks as harpia.connect: the accept key, the subprotocol offered.
        assert self._opening is not None and self._handshake is not None
        try:
            result = self._opening.feed(data, eof)
        except HandshakeError as exc:
            self.status = exc.status
            self.response_headers = {name.lower(): value for name, value in exc.headers.items()}
            self._handshake.set_exception(exc)
            return
        if result is None:
            return
        self.status = result.status
        self.response_headers = {name.lower(): value for name, value in result.headers.raw_items()}
        if result.status != 101:
            self._handshake.set_exception(HandshakeError(result.status, "redirected",
                                                         self.response_headers))
            return
        self.subprotocol = result.subprotocol
        self._handshake.set_result(None)
        if result.trailing:
            self.feed(result.trailing)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.close_code is None:
            self.close_code = self.close_code_received or 1006
            self.close_reason = self.close_reason_received if self.close_code_received else ""
        self.detach()
        if self._handshake is not None and not self._handshake.done():
            self._handshake.set_exception(ConnectionError("connection lost during the handshake"))
        self._messages.put_nowait(_CLOSED)
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)

    def eof_received(self) -> bool:
        if self.status is None and self._opening is not None:
            self._read_response(b"", eof=True)
        return False

    # engine hooks -------------------------------------------------------------------

    def close_received(self, code: int, reason: str) -> None:
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason

    def protocol_failed(self, code: int, reason: str) -> None:
        self.close_code, self.close_reason = code, reason
        if self.transport is not None:
            self.transport.close()

    def handler_failed(self, exc: BaseException) -> None:  # pragma: no cover - no handlers
        raise exc

    # test API --------------------------------------------------------------------

    def _start(self, path: str, host: str, headers: Mapping[str, str],
               subprotocols: Sequence[str]) -> None:
        self._opening = ClientHandshake(parse_url(f"ws://{host}{path}"),
                                        subprotocols=subprotocols, headers=headers)
        self._handshake = asyncio.get_running_loop().create_future()
        assert self.transport is not None
        self.transport.write(self._opening.request())

    def _take_messages(self) -> None:
        for event in self.events_received():
            if event[0] == "message":
                self._messages.put_nowait(event[1])

    async def receive(self, timeout: float | None = 5.0) -> str | bytes:
        """The next message; raises ``ConnectionClosed`` (with the close code) once closed."""
        self._take_messages()
        try:
            item = await asyncio.wait_for(self._messages.get(), timeout)
        except TimeoutError:
            raise TimeoutError(
                f"TestWebSocket.receive: no message from the server within {timeout} s "
                f"(the connection is still open; pass timeout= to wait longer)") from None
        if item is _CLOSED:
            self._messages.put_nowait(_CLOSED)
            raise ConnectionClosed(self.close_code or 1006, self.close_reason)
        return item  # type: ignore[no-any-return]

    def feed(self, data: Any) -> None:
        super().feed(data)
        self._take_messages()

    async def send(self, message: str | bytes) -> int:  # type: ignore[override]
        """Send a message (str: text, bytes: binary)."""
        if self.ready_state != 1:
            raise ConnectionClosed(self.close_code or 1006, self.close_reason)
        sent = int(super().send(message))
        self.flush_output()
        await asyncio.sleep(0)
        return sent

    async def close(self, code: int = 1000, reason: str = "") -> None:  # type: ignore[override]
        """Close and wait until the server has closed the connection."""
        super().close(code, reason)
        self.flush_output()
        await self.wait_closed()
        if self.close_code is None or self.close_code == 1006 and self.close_code_received:
            self.close_code = self.close_code_received

    async def wait_closed(self, timeout: float = 5.0) -> None:
        """Wait until the connection is closed (``close_code`` is then set)."""
        assert self._closed is not None
        await asyncio.wait_for(asyncio.shield(self._closed), timeout)

    def pause_reading(self) -> None:
        """Stop reading: the server's output backs up, as with a slow client."""
        assert self.transport is not None
        self.transport.pause_reading()

    def resume_reading(self) -> None:
        """Read again after ``pause_reading`` (or ``connect(slow=True)``)."""
        assert self.transport is not None
        self.transport.resume_reading()


class TestClient:
    """Connect to ``app`` in-process: ``async with TestClient(app) as client``."""

    __test__ = False

    def __init__(self, app: App, *, host: str = "testserver") -> None:
        self.app = app
        self.host = host
        self._listener = Listener(app)
        self._clients: list[TestWebSocket] = []

    async def __aenter__(self) -> TestClient:
        await self._listener.start_in_process()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        # As a server shutdown: every open connection is closed with 1001.
        await self._listener.stop(timeout=1.0)
        for ws in self._clients:
            if ws.transport is not None and not ws.transport.is_closing():
                ws.transport.abort()

    async def connect(
        self,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        subprotocols: Sequence[str] = (),
        slow: bool = False,
        max_payload_length: int = 64 * 1024 * 1024,
    ) -> TestWebSocket:
        """Open a WebSocket to ``path``; raises ``HandshakeError`` (with ``.status``) if the
        app answers anything but 101.  ``slow=True`` starts with reading paused."""
        loop = asyncio.get_running_loop()
        server_sock, client_sock = socket.socketpair()
        if slow:
            # Small kernel buffers, so backpressure shows after kilobytes, not megabytes.
            for sock in (server_sock, client_sock):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        listener = self._listener
        await loop.connect_accepted_socket(lambda: HttpProtocol(listener), server_sock)
        _, ws = await loop.create_connection(
            lambda: TestWebSocket(max_payload_length=max_payload_length), sock=client_sock)
        self._clients.append(ws)
        ws._start(path, self.host, headers or {}, subprotocols)
        assert ws._handshake is not None
        await asyncio.wait_for(ws._handshake, 5.0)
        if slow:
            ws.pause_reading()
        return ws
