"""PROXY protocol v1/v2: the parser fed whole, byte by byte and with trailing data; a
listener with ``proxy_protocol=True`` over real sockets (headers written by the test, and
a real HAProxy when it is installed); garbage dropped without an answer."""
from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import struct
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from wsclient import TEXT, RawClient, upgrade_request

from harpia import ConfigurationError, ProxyProtocolError, harpia
from harpia.proxy_protocol import MAX_V2_LENGTH, V2_SIGNATURE, ProxyHeader, ProxyHeaderParser

V1 = b"PROXY TCP4 203.0.113.7 192.0.2.1 51234 443\r\n"
V1_SIX = b"PROXY TCP6 2001:db8::7 2001:db8::1 51234 443\r\n"


def v2(command: int = 0x21, family: int = 0x11, body: bytes | None = None) -> bytes:
    if body is None:
        body = socket.inet_aton("198.51.100.9") + socket.inet_aton("192.0.2.1") + struct.pack("!HH", 40000, 443)
    return V2_SIGNATURE + bytes([command, family]) + struct.pack("!H", len(body)) + body


def parse_whole(data: bytes) -> tuple[ProxyHeader | None, bytes]:
    parser = ProxyHeaderParser()
    header = parser.feed(data)
    return header, parser.trailing


def parse_bytewise(data: bytes) -> tuple[ProxyHeader | None, bytes]:
    parser = ProxyHeaderParser()
    for i in range(len(data)):
        header = parser.feed(data[i:i + 1])
        if header is not None:
            return header, parser.trailing + data[i + 1:]
    return None, b""


@pytest.mark.parametrize("feed", [parse_whole, parse_bytewise])
def test_v1_and_v2_headers(feed: Any) -> None:
    header, rest = feed(V1 + b"GET / HTTP/1.1\r\n")
    assert header == ProxyHeader(1, ("203.0.113.7", 51234), ("192.0.2.1", 443))
    assert rest == b"GET / HTTP/1.1\r\n"
    header, rest = feed(V1_SIX)
    assert header is not None and header.source == ("2001:db8::7", 51234) and rest == b""
    header, rest = feed(v2() + b"tail")
    assert header == ProxyHeader(2, ("198.51.100.9", 40000), ("192.0.2.1", 443))
    assert rest == b"tail"
    six = socket.inet_pton(socket.AF_INET6, "2001:db8::9") * 2 + struct.pack("!HH", 1, 2)
    header, _ = feed(v2(family=0x21, body=six + b"\x04\x00\x01x"))   # with a TLV after
    assert header is not None and header.source == ("2001:db8::9", 1)


def test_local_and_unknown_keep_the_peer() -> None:
    assert parse_whole(v2(command=0x20, family=0x00, body=b""))[0] == ProxyHeader(2, None, None)
    assert parse_whole(b"PROXY UNKNOWN\r\n")[0] == ProxyHeader(1, None, None)


@pytest.mark.parametrize("garbage", [
    b"GET / HTTP/1.1\r\n\r\n",                       # no header at all
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",          # too many fields
    b"PROXY TCP4 1.2.3.999 5.6.7.8 1 2\r\n",          # bad address
    b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 2\r\n",        # bad port
    b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",            # bad protocol
    b"PROXY " + b"x" * 200,                           # v1 without an end in 107 bytes
    b"\r\n\r\n\x00\r\nQUIX\n" + b"\x21\x11\x00\x0c",  # broken v2 signature
    v2(command=0x31),                                 # version 3
    v2(body=b"\x00" * 4),                             # addresses cut short
])
def test_garbage_is_an_error(garbage: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        parse_whole(garbage)
    with pytest.raises(ProxyProtocolError):
        parse_bytewise(garbage)


def test_v2_length_is_bounded_at_the_header() -> None:
    parser = ProxyHeaderParser()
    announced = V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", MAX_V2_LENGTH)
    with pytest.raises(ProxyProtocolError, match="at most"):
        parser.feed(announced)            # refused before any of the body is buffered


def make_app(seen: list[Any]) -> Any:
    app = harpia()

    def upgrade(request: Any) -> None:
        seen.append(("upgrade", request.remote_address))

    def on_open(ws: Any) -> None:
        seen.append(("open", ws.remote_address))
        ws.send(f"{ws.remote_address[0]} {ws.remote_address[1]}")

    app.ws("/", {"open": on_open}, upgrade=upgrade)
    return app


async def test_listener_reads_the_header_written_by_the_client() -> None:
    seen: list[Any] = []
    async with make_app(seen).serve(proxy_protocol=True) as server:
        for header, address in ((V1, ("203.0.113.7", 51234)), (v2(), ("198.51.100.9", 40000))):
            client = await RawClient.connect(server.port)
            # Header and request in one write, and the header split over two writes.
            await client.send(header[:5])
            await asyncio.sleep(0.01)
            await client.send(header[5:] + upgrade_request("/"))
            assert (await client.read_response()).status == 101
            frame = await client.recv_frame()
            assert frame.opcode == TEXT and frame.payload.decode() == f"{address[0]} {address[1]}"
            client.sock.close()
        # LOCAL (a balancer's health check): the TCP peer stays the address.
        client = await RawClient.connect(server.port)
        await client.send(v2(command=0x20, family=0, body=b"") + upgrade_request("/"))
        assert (await client.read_response()).status == 101
        frame = await client.recv_frame()
        assert frame.payload.decode() == f"127.0.0.1 {client.local_port}"
        client.sock.close()
    assert seen[0] == ("upgrade", ("203.0.113.7", 51234))
    assert seen[1] == ("open", ("203.0.113.7", 51234))


async def test_garbage_is_dropped_without_an_answer() -> None:
    async with make_app([]).serve(proxy_protocol=True) as server:
        for garbage in (upgrade_request("/"), b"PROXY " + b"9" * 300):
            client = await RawClient.connect(server.port)
            await client.send(garbage)
            assert not await client._fill(5.0)       # closed, nothing written
            assert client.buffer == b""
            client.sock.close()
        assert server.app.stats()["handshake_failures_by_status"] == {400: 2}


def test_not_with_tls() -> None:
    with pytest.raises(ConfigurationError, match="tls"):
        make_app([]).serve(proxy_protocol=True, tls=ssl.create_default_context(ssl.Purpose.CLIENT_AUTH))


async def test_without_the_option_a_header_is_a_bad_request() -> None:
    async with make_app([]).serve() as server:
        client = await RawClient.connect(server.port)
        await client.send(V1 + upgrade_request("/"))
        assert (await client.read_response()).status == 400
        client.sock.close()


HAPROXY_CONFIG = """
global
    maxconn 100
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend ws
    bind 127.0.0.1:{front}
    default_backend harpia
backend harpia
    server one 127.0.0.1:{back} send-proxy-v2
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_behind_a_real_haproxy(tmp_path: Path) -> None:
    seen: list[Any] = []
    async with make_app(seen).serve(proxy_protocol=True) as server:
        front = free_port()
        config = tmp_path / "haproxy.cfg"
        config.write_text(HAPROXY_CONFIG.format(front=front, back=server.port))
        haproxy = subprocess.Popen([shutil.which("haproxy") or "/usr/sbin/haproxy", "-db", "-f", str(config)],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 20
            client = None
            while client is None:
                try:
                    client = await RawClient.connect(front)
                except OSError:
                    assert haproxy.poll() is None, haproxy.communicate()[0]
                    assert time.monotonic() < deadline, "haproxy did not start listening"
                    await asyncio.sleep(0.05)
            assert (await client.handshake("/")).status == 101
            frame = await client.recv_frame()
            # HAProxy's own connection comes from another port: the one seen is the client's.
            assert frame.payload.decode() == f"127.0.0.1 {client.local_port}"
            assert seen[-1] == ("open", ("127.0.0.1", client.local_port))
            client.sock.close()
        finally:
            haproxy.terminate()
            haproxy.wait(10)
