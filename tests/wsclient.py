"""Clients for the server tests: a raw client that speaks bytes built by hand, and helpers.

``RawClient`` drives a plain non-blocking socket through the running loop's ``sock_*``
methods, so it reads only when a test asks it to (a client that "stops reading" simply
does not call ``recv_frame``).  Requests are written by hand; client frames come from
``harpia._frames.serialize_frame`` with a fixed mask; server frames are parsed here, from
RFC 6455 section 5.2, without the engine.  Other test modules import this one by name.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from harpia._frames import serialize_frame

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0, 1, 2, 8, 9, 10
MASK = b"abcd"
KEY = "dGhlIHNhbXBsZSBub25jZQ=="
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def expected_accept(key: str) -> str:
    """``Sec-WebSocket-Accept`` for ``key`` (RFC 6455 section 4.2.2), computed here."""
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def upgrade_request(
    path: str = "/",
    *,
    host: str = "127.0.0.1",
    key: str = KEY,
    method: str = "GET",
    version: str = "HTTP/1.1",
    headers: Iterable[tuple[str, str]] = (),
    upgrade: bool = True,
) -> bytes:
    """A WebSocket opening request (or, with ``upgrade=False``, a plain one)."""
    lines = [f"{method} {path} {version}", f"Host: {host}"]
    if upgrade:
        lines += ["Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {key}",
                  "Sec-WebSocket-Version: 13"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def client_frame(opcode: int, payload: bytes | str = b"", *, fin: bool = True) -> bytes:
    """A masked client frame."""
    return serialize_frame(opcode, payload, fin=fin, mask=MASK)


def close_payload(code: int | None, reason: str = "") -> bytes:
    return b"" if code is None else struct.pack("!H", code) + reason.encode()


@dataclass
class Frame:
    fin: bool
    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int | None:
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None

    @property
    def close_reason(self) -> str:
        return self.payload[2:].decode()


@dataclass
class HttpResponse:
    status: int
    reason: str
    headers: dict[str, str]   # lower-cased names
    body: bytes


class RawClient:
    """One TCP connection to the server, read and written only when the test says so."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self.buffer = bytearray()
        self.eof = False

    @classmethod
    async def connect(cls, port: int, *, rcvbuf: int | None = None) -> RawClient:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            # Set before connecting so the window is small from the first segment.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        return cls(sock)

    @classmethod
    async def open(cls, port: int, path: str = "/", **options: Any) -> RawClient:
        """Connect and complete the opening handshake (asserting the 101)."""
        rcvbuf = options.pop("rcvbuf", None)
        client = await cls.connect(port, rcvbuf=rcvbuf)
        response = await client.handshake(path, **options)
        assert response.status == 101, response
        return client

    @property
    def local_port(self) -> int:
        return int(self.sock.getsockname()[1])

    async def send(self, data: bytes) -> None:
        await self.loop.sock_sendall(self.sock, data)

    async def send_frame(self, opcode: int, payload: bytes | str = b"", *,
                         fin: bool = True) -> None:
        await self.send(client_frame(opcode, payload, fin=fin))

    async def send_text(self, text: str) -> None:
        await self.send_frame(TEXT, text)

    async def send_close(self, code: int | None = 1000, reason: str = "") -> None:
        await self.send_frame(CLOSE, close_payload(code, reason))

    async def _fill(self, timeout: float) -> bool:
        """Read once more into the buffer; False at EOF."""
        if self.eof:
            return False
        try:
            data = await asyncio.wait_for(self.loop.sock_recv(self.sock, 65536), timeout)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buffer += data
        return True

    async def _take(self, n: int, timeout: float) -> bytes:
        while len(self.buffer) < n:
            if not await self._fill(timeout):
                raise EOFError(f"connection closed with {len(self.buffer)} of {n} bytes read")
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    async def read_response(self, timeout: float = 5.0, *, body: bool = True) -> HttpResponse:
        """One HTTP response: head, then a Content-Length body (none for a 101, nor with
        ``body=False``: the answer to a HEAD)."""
        while b"\r\n\r\n" not in self.buffer:
            if not await self._fill(timeout):
                raise EOFError(f"connection closed inside the response head: {bytes(self.buffer)!r}")
        end = self.buffer.index(b"\r\n\r\n")
        head = bytes(self.buffer[:end]).decode("latin-1")
        del self.buffer[:end + 4]
        status_line, *header_lines = head.split("\r\n")
        version, status, reason = (status_line.split(" ", 2) + [""])[:3]
        assert version == "HTTP/1.1", status_line
        headers: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        content = await self._take(length, timeout) if length and body else b""
        return HttpResponse(int(status), reason, headers, content)

    async def handshake(self, path: str = "/", **options: Any) -> HttpResponse:
        await self.send(upgrade_request(path, **options))
        return await self.read_response()

    async def recv_frame(self, timeout: float = 5.0) -> Frame:
        b0, b1 = await self._take(2, timeout)
        assert not b1 & 0x80, "server frames must not be masked"
        assert not b0 & 0x70, "no extension was negotiated: RSV bits must be clear"
        length = b1 & 0x7F
        if length == 126:
            length = struct.unpack("!H", await self._take(2, timeout))[0]
        elif length == 127:
            length = struct.unpack("!Q", await self._take(8, timeout))[0]
        payload = await self._take(length, timeout) if length else b""
        return Frame(bool(b0 & 0x80), b0 & 0x0F, payload)

    async def recv_message(self, timeout: float = 5.0) -> str | bytes:
        """The next data message, reassembled; pings and pongs are skipped."""
        parts: list[bytes] = []
        opcode = None
        while True:
            frame = await self.recv_frame(timeout)
            if frame.opcode in (PING, PONG):
                continue
            assert frame.opcode != CLOSE, f"expected a message, got close {frame.close_code}"
            if opcode is None:
                opcode = frame.opcode
            parts.append(frame.payload)
            if frame.fin:
                data = b"".join(parts)
                return data.decode() if opcode == TEXT else data

    async def recv_close(self, timeout: float = 5.0) -> Frame:
        """Skip to the next close frame (asserting no data message comes first)."""
        while True:
            frame = await self.recv_frame(timeout)
            if frame.opcode == CLOSE:
                return frame
            assert frame.opcode in (PING, PONG), f"expected close, got {frame}"

    async def expect_eof(self, timeout: float = 5.0) -> None:
        """The server closes TCP (what it sent before is left in ``buffer``)."""
        while await self._fill(timeout):
            pass

    def close(self) -> None:
        self.sock.close()

    def reset(self) -> None:
        """Drop the connection with a TCP RST (no close frame, no FIN)."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


def ws_connect(port: int, path: str = "/", *, scheme: str = "ws", host: str = "127.0.0.1",
               **options: Any) -> Any:
    """``websockets``' client, the independent peer: ``async with ws_connect(port) as ws``."""
    options.setdefault("ping_interval", None)
    options.setdefault("proxy", None)
    options.setdefault("open_timeout", 5)
    options.setdefault("close_timeout", 5)
    return connect(f"{scheme}://{host}:{port}{path}", **options)


class Mailbox:
    """Records what handlers report, in order, and lets a test wait for it.

    ``mailbox.put("close", code, reason)`` from a handler; ``await mailbox.get()`` returns
    ``("close", code, reason)``; ``mailbox.log`` keeps everything.
    """

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self.log: list[tuple[Any, ...]] = []

    def put(self, *item: Any) -> None:
        self.log.append(item)
        self.queue.put_nowait(item)

    async def get(self, timeout: float = 5.0) -> tuple[Any, ...]:
        return await asyncio.wait_for(self.queue.get(), timeout)

    async def get_kind(self, kind: str, timeout: float = 5.0) -> tuple[Any, ...]:
        """The next item whose first element is ``kind`` (others are skipped)."""
        while True:
            item = await self.get(timeout)
            if item[0] == kind:
                return item

    def kinds(self, kind: str) -> list[tuple[Any, ...]]:
        return [item for item in self.log if item[0] == kind]

    async def quiet(self, seconds: float) -> list[tuple[Any, ...]]:
        """Wait ``seconds`` and return what arrived meanwhile (to check nothing did)."""
        await asyncio.sleep(seconds)
        items = []
        while not self.queue.empty():
            items.append(self.queue.get_nowait())
        return items


async def closed_code(ws: ClientConnection, timeout: float = 5.0) -> tuple[int | None, str | None]:
    """Wait until the websockets client's connection is closed; the close it received."""
    await asyncio.wait_for(ws.wait_closed(), timeout)
    return ws.close_code, ws.close_reason
