"""harpia.connect against other servers: websockets' (ws, wss, deflate, Unix socket),
harpia's over TLS and IPv6, and hand-written servers that answer badly or not at all."""
from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trustme
from websockets.asyncio.server import ServerConnection, serve, unix_serve

import harpia
from harpia import ConnectionClosed, HandshakeError
from harpia.handshake import accept_key


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_cert(ca: trustme.CA) -> trustme.LeafCert:
    return ca.issue_cert("localhost", "127.0.0.1")


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def pem_files(server_cert: trustme.LeafCert, tmp_path: Path) -> dict[str, str]:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    server_cert.private_key_pem.write_to_path(str(key))
    for i, blob in enumerate(server_cert.cert_chain_pems):
        blob.write_to_path(str(cert), append=i > 0)
    return {"key": str(key), "cert": str(cert)}


async def ws_echo(connection: ServerConnection) -> None:
    async for message in connection:
        if message == "close please":
            await connection.close(4002, "as asked")
            return
        await connection.send(message)


async def talk(url: str, **options: Any) -> tuple[int, str]:
    async with harpia.connect(url, **options) as ws:
        for message in ("text", b"\x00binary\xff", "x" * 70_000, b"y" * 300_000):
            ws.send(message)
            assert await ws.recv() == message
        ws.ping(b"are you there")
    return await ws.wait_closed()


async def test_websockets_server_ws(loop_kind: str) -> None:
    async with serve(ws_echo, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        assert await talk(f"ws://127.0.0.1:{port}/any") == (1000, "")
        ws = await harpia.connect(f"ws://127.0.0.1:{port}/")
        ws.send("close please")
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
        assert (info.value.code, info.value.reason) == (4002, "as asked")


async def test_websockets_server_deflate_and_subprotocol() -> None:
    async with serve(ws_echo, "127.0.0.1", 0, subprotocols=["v2", "v1"]) as server:
        port = server.sockets[0].getsockname()[1]
        async with harpia.connect(f"ws://127.0.0.1:{port}/", per_message_deflate=True,
                                  subprotocols=["v1"]) as ws:
            assert ws.subprotocol == "v1"
            assert ws.extensions is not None and ws.extensions.startswith("permessage-deflate")
            for i in range(20):             # context kept across messages both ways
                text = f"message {i} " * 500
                ws.send(text)
                assert await ws.recv() == text


async def test_websockets_server_wss(server_cert: trustme.LeafCert, ca_file: str) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(context)
    async with serve(ws_echo, "127.0.0.1", 0, ssl=context) as server:
        port = server.sockets[0].getsockname()[1]
        assert await talk(f"wss://localhost:{port}/", tls={"ca": ca_file}) == (1000, "")
        # Verification is on by default: the test CA is not trusted.
        with pytest.raises(ssl.SSLCertVerificationError):
            await harpia.connect(f"wss://localhost:{port}/")


async def test_harpia_server_wss(pem_files: dict[str, str], ca: trustme.CA,
                                 tmp_path: Path) -> None:
    app = harpia.harpia()
    app.ws("/echo", {"message": lambda ws, m: ws.send(m)})
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    async with app.serve(port=0, tls=pem_files) as server:
        assert await talk(f"wss://localhost:{server.port}/echo", tls=client_context) == (1000, "")
    # A certificate from the trusted CA, but for another name.
    other = ca.issue_cert("other.example")
    key, cert = tmp_path / "other-key.pem", tmp_path / "other-cert.pem"
    other.private_key_pem.write_to_path(str(key))
    other.cert_chain_pems[0].write_to_path(str(cert))
    async with app.serve(port=0, tls={"key": str(key), "cert": str(cert)}) as server:
        with pytest.raises(ssl.SSLCertVerificationError, match="mismatch|match"):
            await harpia.connect(f"wss://localhost:{server.port}/echo", tls=client_context)


async def test_unix_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "ws.sock")
    async with unix_serve(ws_echo, path):
        assert await talk("ws://localhost/over-unix", unix=path) == (1000, "")


async def test_ipv6_literal() -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        # Containers without an IPv6 loopback cannot bind ::1 at all: there is nothing to
        # connect to, so the test can say nothing there (this machine and CI have one).
        pytest.skip("no IPv6 loopback on this machine")
    seen: list[str] = []

    async def handler(connection: ServerConnection) -> None:
        assert connection.request is not None
        seen.append(connection.request.headers["Host"])
        await ws_echo(connection)

    async with serve(handler, "::1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        assert await talk(f"ws://[::1]:{port}/") == (1000, "")
    assert seen == [f"[::1]:{port}"]


RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def raw_server(handler: RawHandler) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def read_key(reader: asyncio.StreamReader) -> str:
    head = await reader.readuntil(b"\r\n\r\n")
    for line in head.decode().split("\r\n"):
        if line.lower().startswith("sec-websocket-key:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError("no key")


async def test_wrong_accept_is_refused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_key(reader)
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: bm90IHRoZSByaWdodCBrZXk=\r\n\r\n")
        await reader.read()

    server, port = await raw_server(handler)
    async with server:
        with pytest.raises(HandshakeError, match="Sec-WebSocket-Accept") as info:
            await harpia.connect(f"ws://127.0.0.1:{port}/")
        assert info.value.status == 101


@pytest.mark.parametrize("pieces", [1, 3, 12])
async def test_101_variants_whole_and_in_pieces(pieces: int) -> None:
    """A 101 with the fields in another order and spelling, extra header lines and the
    server's first frame right behind it, written whole or in pieces (the server waits for
    each piece to be flushed, so the client usually reads them apart): accepted, and the
    frame is delivered."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        key = await read_key(reader)
        answer = (f"HTTP/1.1 101 Switching Protocols\r\nDate: Mon, 07 Dec 2026 07:00:00 GMT\r\n"
                  f"sec-websocket-accept: {accept_key(key)}\r\nconnection: upgrade\r\n"
                  f"Server: hand-written\r\nUPGRADE: WebSocket\r\n\r\n").encode() + b"\x81\x02hi"
        step = -(-len(answer) // pieces)
        for start in range(0, len(answer), step):
            writer.write(answer[start:start + step])
            await writer.drain()
        await reader.read(6)                        # the client's close frame, masked
        writer.write(b"\x88\x02\x03\xe8")
        writer.close()

    server, port = await raw_server(handler)
    async with server:
        ws = await harpia.connect(f"ws://127.0.0.1:{port}/")
        assert await asyncio.wait_for(ws.recv(), 10) == "hi"
        assert ws.response_headers["server"] == "hand-written"
        ws.close()
        assert await asyncio.wait_for(ws.wait_closed(), 10) == (1000, "")


async def test_refusal_with_a_body_keeps_status_and_body() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_key(reader)
        writer.write(b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer\r\n"
                     b"Content-Length: 13\r\n\r\nlog in first\n")
        await reader.read()

    server, port = await raw_server(handler)
    async with server:
        with pytest.raises(HandshakeError, match="log in first") as info:
            await harpia.connect(f"ws://127.0.0.1:{port}/")
        assert info.value.status == 401
        assert info.value.headers["WWW-Authenticate"] == "Bearer"


async def test_redirects_followed_only_when_asked() -> None:
    app = harpia.harpia()
    app.ws("/target", {"message": lambda ws, m: ws.send(m)})
    async with app.serve(port=0) as target:
        async def redirect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_key(reader)
            writer.write(f"HTTP/1.1 307 Temporary Redirect\r\nLocation: "
                         f"ws://127.0.0.1:{target.port}/target\r\nContent-Length: 0\r\n\r\n".encode())
            await writer.drain()
            writer.close()

        async def loop_forever(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_key(reader)
            writer.write(b"HTTP/1.1 302 Found\r\nLocation: /again\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            writer.close()

        server, port = await raw_server(redirect)
        async with server:
            with pytest.raises(HandshakeError, match="follow_redirects") as info:
                await harpia.connect(f"ws://127.0.0.1:{port}/start")
            assert info.value.status == 307
            async with harpia.connect(f"ws://127.0.0.1:{port}/start", follow_redirects=True) as ws:
                assert ws.url.endswith("/target")
                ws.send("went there")
                assert await ws.recv() == "went there"
        server, port = await raw_server(loop_forever)
        async with server:
            with pytest.raises(HandshakeError, match="more than 3 redirects"):
                await harpia.connect(f"ws://127.0.0.1:{port}/", follow_redirects=True,
                                     max_redirects=3)


async def test_close_timeout_when_the_server_never_answers() -> None:
    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        key = await read_key(reader)
        writer.write(f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept_key(key)}\r\n\r\n"
                     .encode())
        await asyncio.sleep(30)            # reads nothing, answers nothing

    server, port = await raw_server(mute)
    async with server:
        ws = await harpia.connect(f"ws://127.0.0.1:{port}/", close_timeout=0.3)
        ws.close(1000)
        assert await asyncio.wait_for(ws.wait_closed(), 10) == (1006, "")


async def test_server_protocol_error_fails_with_1002() -> None:
    async def unmasked_rsv(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        key = await read_key(reader)
        writer.write(f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept_key(key)}\r\n\r\n"
                     .encode() + b"\xc1\x02hi")     # RSV1 without an extension
        frame = await reader.read(64)
        assert frame[:1] == b"\x88"             # the client's close frame
        await reader.read()

    server, port = await raw_server(unmasked_rsv)
    async with server:
        ws = await harpia.connect(f"ws://127.0.0.1:{port}/")
        code, _ = await asyncio.wait_for(ws.wait_closed(), 10)
        assert code == 1002


async def test_client_certificate(server_cert: trustme.LeafCert, ca: trustme.CA, ca_file: str,
                                  tmp_path: Path) -> None:
    """tls={"ca", "cert", "key"}: trust a private CA and present a client certificate."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(context)
    ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED
    client = ca.issue_cert("client.example")
    cert, key = tmp_path / "client.pem", tmp_path / "client-key.pem"
    client.cert_chain_pems[0].write_to_path(str(cert))
    client.private_key_pem.write_to_path(str(key))
    async with serve(ws_echo, "127.0.0.1", 0, ssl=context) as server:
        port = server.sockets[0].getsockname()[1]
        tls = {"ca": ca_file, "cert": str(cert), "key": str(key)}
        assert await talk(f"wss://localhost:{port}/", tls=tls) == (1000, "")
        # Without the certificate the server ends the TLS handshake.
        with pytest.raises((ssl.SSLError, ConnectionError, HandshakeError)):
            await harpia.connect(f"wss://localhost:{port}/", tls={"ca": ca_file})
