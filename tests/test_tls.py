"""wss:// with certificates from trustme: a mapping of PEM paths, or an ssl.SSLContext."""
from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest
import trustme
from websockets.exceptions import InvalidHandshake
from wsclient import Mailbox, closed_code, ws_connect

import harpia
from harpia import ServerWebSocket


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_cert(ca: trustme.CA) -> trustme.LeafCert:
    return ca.issue_cert("localhost", "127.0.0.1")


@pytest.fixture
def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture
def pem_files(server_cert: trustme.LeafCert, tmp_path: Path) -> dict[str, str]:
    key = tmp_path / "key.pem"
    cert = tmp_path / "cert.pem"
    server_cert.private_key_pem.write_to_path(str(key))
    server_cert.cert_chain_pems[0].write_to_path(str(cert))
    for blob in server_cert.cert_chain_pems[1:]:
        blob.write_to_path(str(cert), append=True)
    return {"key": str(key), "cert": str(cert)}


def tls_app(mailbox: Mailbox) -> harpia.App:
    def open_(ws: ServerWebSocket[Any]) -> None:
        mailbox.put("open", ws.url, ws.data.url, ws.secure)

    app = harpia.harpia()
    app.ws("/secure", {"open": open_, "message": lambda ws, m: ws.send(m),
                       "close": lambda ws, code, reason: mailbox.put("close", code, reason)})
    return app


async def exercise(server: harpia.Listener, context: ssl.SSLContext, mailbox: Mailbox) -> None:
    assert server.url.startswith("wss://")
    async with ws_connect(server.port, "/secure?x=1", scheme="wss", host="localhost",
                          ssl=context) as client:
        url = f"wss://localhost:{server.port}/secure?x=1"
        assert await mailbox.get() == ("open", url, url, True)
        await client.send("over tls")
        assert await client.recv() == "over tls"
        big = b"\xab" * 300_000                    # several TLS records each way
        await client.send(big)
        assert await client.recv() == big
        await client.close(4000, "done")
    assert await mailbox.get() == ("close", 4000, "done")


async def test_tls_from_pem_paths(pem_files: dict[str, str],
                                  client_context: ssl.SSLContext) -> None:
    mailbox = Mailbox()
    async with tls_app(mailbox).serve(tls=pem_files) as server:
        await exercise(server, client_context, mailbox)


async def test_tls_from_an_ssl_context(server_cert: trustme.LeafCert,
                                       client_context: ssl.SSLContext) -> None:
    mailbox = Mailbox()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(server_context)
    async with tls_app(mailbox).serve(tls=server_context) as server:
        await exercise(server, client_context, mailbox)


async def test_plain_and_tls_listeners_of_one_app(pem_files: dict[str, str],
                                                  client_context: ssl.SSLContext) -> None:
    mailbox = Mailbox()
    app = tls_app(mailbox)
    async with app.serve() as plain, app.serve(tls=pem_files) as secure:
        async with ws_connect(plain.port, "/secure") as a, \
                ws_connect(secure.port, "/secure", scheme="wss", host="localhost",
                           ssl=client_context) as b:
            urls = {(await mailbox.get())[1] for _ in range(2)}
            assert urls == {f"ws://127.0.0.1:{plain.port}/secure",
                            f"wss://localhost:{secure.port}/secure"}
            assert len(app.websocket.connections) == 2
        # Graceful stop closes TLS clients with 1001 too.
        async with ws_connect(secure.port, "/secure", scheme="wss", host="localhost",
                              ssl=client_context) as c:
            await mailbox.get_kind("open")
            await secure.stop()
            assert await closed_code(c) == (1001, "server shutting down")


async def test_a_plain_client_cannot_speak_to_the_tls_port(pem_files: dict[str, str]) -> None:
    mailbox = Mailbox()
    async with tls_app(mailbox).serve(tls=pem_files) as server:
        # The TLS side drops the clear-text request: no HTTP response comes back.
        with pytest.raises(InvalidHandshake):
            async with ws_connect(server.port, "/secure", open_timeout=2):
                pass
        await asyncio.sleep(0.05)
        assert mailbox.log == []                   # no connection was opened


class BioClient:
    """A blocking wss client over ssl.MemoryBIO, so that a test chooses when each TLS
    record goes out: ``hello()`` puts the ClientHello on the wire and returns."""

    REQUEST = ("GET /greet HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n").encode()

    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")

    def _flush(self) -> None:
        data = self.outgoing.read()
        if data:
            self.sock.sendall(data)

    def _feed(self) -> None:
        chunk = self.sock.recv(65536)
        assert chunk, "the server closed the connection"
        self.incoming.write(chunk)

    def hello(self) -> None:
        with pytest.raises(ssl.SSLWantReadError):
            self.tls.do_handshake()
        self._flush()

    def exchange(self) -> tuple[bytes, bytes]:
        """Finish the handshake, upgrade with a masked "ping" frame right behind the
        request; returns (the frame the server sent in open, the echo of ours)."""
        try:
            while True:
                try:
                    self.tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    self._flush()
                    self._feed()
            self.tls.write(self.REQUEST + b"\x81\x84\x00\x00\x00\x00ping")
            self._flush()
            received = b""
            while b"\r\n\r\n" not in received or len(received.partition(b"\r\n\r\n")[2]) < 13:
                try:
                    received += self.tls.read(65536)
                except ssl.SSLWantReadError:
                    self._feed()
            head, _, frames = received.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101"), head
            return frames[:7], frames[7:]          # "hello" and "ping", unmasked
        finally:
            self.sock.close()


def greeting_app() -> harpia.App:
    app = harpia.harpia()
    app.ws("/greet", {"open": lambda ws: ws.send("hello"),
                      "message": lambda ws, m: ws.send(m)})
    return app


@pytest.mark.timeout(120)
async def test_a_client_hello_sent_before_the_accept_is_not_lost(
        pem_files: dict[str, str], client_context: ssl.SSLContext) -> None:
    # A ClientHello read before the TLS layer took the connection over must reach it
    # (it was once read as plain text and the handshake stalled, mostly on uvloop).
    async with greeting_app().serve(tls=pem_files) as server:
        for _ in range(5):
            # Connected and ClientHello sent without yielding to the loop: the server
            # reads the hello in the same turn as it accepts the connection.
            clients = [BioClient(server.port, client_context) for _ in range(3)]
            for client in clients:
                client.hello()
            rounds = [asyncio.to_thread(client.exchange) for client in clients]
            for greeting, echo in await asyncio.gather(*rounds):
                assert greeting == b"\x81\x05hello"
                assert echo == b"\x81\x04ping"


@pytest.mark.timeout(120)
async def test_many_wss_connections_with_the_server_sending_in_open(
        pem_files: dict[str, str], client_context: ssl.SSLContext) -> None:
    async with greeting_app().serve(tls=pem_files) as server:
        for i in range(30):
            async with ws_connect(server.port, "/greet", scheme="wss", host="localhost",
                                  ssl=client_context, open_timeout=20) as client:
                if i % 2:
                    await client.send("at once")   # right behind the handshake
                    assert await client.recv() == "hello"
                    assert await client.recv() == "at once"
                else:
                    assert await client.recv() == "hello"
