"""wss:// with certificates from trustme: a mapping of PEM paths, or an ssl.SSLContext."""
from __future__ import annotations

import asyncio
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
