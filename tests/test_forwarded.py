"""X-Forwarded-For / Forwarded believed only from ``forwarded_allow_ips``, never by
default; the parsing of the chains on its own, and over real sockets."""
from __future__ import annotations

from typing import Any

import pytest
from wsclient import RawClient

from harpia import ConfigurationError, Headers, harpia
from harpia.forwarded import TrustedProxies


def headers(*items: tuple[str, str]) -> Headers:
    return Headers(items)


def test_untrusted_peer_keeps_its_own_address() -> None:
    trusted = TrustedProxies(["10.0.0.0/8"])
    peer = ("192.0.2.5", 5000)
    assert trusted.client_address(peer, headers(("X-Forwarded-For", "1.2.3.4"))) == peer


def test_rightmost_untrusted_hop_is_the_client() -> None:
    trusted = TrustedProxies(["10.0.0.0/8", "127.0.0.1"])
    chain = headers(("X-Forwarded-For", "6.6.6.6, 203.0.113.9"), ("X-Forwarded-For", "10.1.2.3"))
    # 6.6.6.6 is what the client claimed; 203.0.113.9 is what the first trusted proxy saw.
    assert trusted.client_address(("127.0.0.1", 1), chain) == ("203.0.113.9", 0)
    only_proxies = headers(("X-Forwarded-For", "10.0.0.1, 10.0.0.2"))
    assert trusted.client_address(("10.9.9.9", 1), only_proxies) == ("10.0.0.1", 0)
    assert trusted.client_address(("127.0.0.1", 7), headers()) == ("127.0.0.1", 7)


def test_forwarded_header_wins_and_is_parsed() -> None:
    trusted = TrustedProxies("*")
    value = 'for="[2001:db8::1]:4711";proto=https, for=198.51.100.17:80;by=x, for=unknown'
    both = headers(("Forwarded", value), ("X-Forwarded-For", "9.9.9.9"))
    # "*" trusts every hop: the left-most known one is the client.
    assert trusted.client_address(("127.0.0.1", 1), both) == ("2001:db8::1", 4711)
    assert trusted.client_address(None, both) == ("2001:db8::1", 4711)   # a Unix-socket proxy
    assert TrustedProxies(["127.0.0.1"]).client_address(None, both) is None


def test_bad_entries_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="forwarded_allow_ips"):
        TrustedProxies(["10.0.0.0/33"])
    with pytest.raises(ConfigurationError, match="not a string"):
        TrustedProxies([10])  # type: ignore[list-item]


def app_reporting_addresses() -> Any:
    app = harpia()
    app.ws("/", {"open": lambda ws: ws.send(repr(ws.remote_address))},
           upgrade=lambda request: None)
    app.get("/ip", lambda request: repr(request.remote_address))
    return app


async def seen(port: int, *extra: tuple[str, str]) -> str:
    client = await RawClient.connect(port)
    assert (await client.handshake("/", headers=extra)).status == 101
    text = (await client.recv_frame()).payload.decode()
    client.sock.close()
    return text


async def test_ignored_by_default_and_honoured_from_trusted_peers() -> None:
    xff = ("X-Forwarded-For", "203.0.113.50")
    async with app_reporting_addresses().serve() as server:
        assert await seen(server.port, xff) != repr(("203.0.113.50", 0))
        assert (await seen(server.port, xff)).startswith("('127.0.0.1', ")
    async with app_reporting_addresses().serve(forwarded_allow_ips=["127.0.0.1"]) as server:
        assert await seen(server.port, xff) == repr(("203.0.113.50", 0))
        client = await RawClient.connect(server.port)
        await client.send(b"GET /ip HTTP/1.1\r\nHost: x\r\nForwarded: for=192.0.2.60\r\n\r\n")
        assert (await client.read_response()).body == repr(("192.0.2.60", 0)).encode()
        client.sock.close()
    async with app_reporting_addresses().serve(forwarded_allow_ips=["10.0.0.0/8"]) as server:
        assert (await seen(server.port, xff)).startswith("('127.0.0.1', ")
