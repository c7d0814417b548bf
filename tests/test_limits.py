"""Abuse controls over real sockets: ``max_connections_per_ip`` (429 with Retry-After,
counted by the PROXY-protocol address when that is on) and ``max_messages_per_second``
(1008, pings counted too); the token bucket on its own."""
from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from test_proxy_protocol import V1
from wsclient import CLOSE, PING, TEXT, RawClient, upgrade_request

from harpia import ConfigurationError, harpia
from harpia.limits import MessageRate


def test_bucket_allows_the_burst_then_the_rate() -> None:
    bucket = MessageRate(rate=100.0, burst=5.0)
    assert all(bucket.take() for _ in range(5))
    assert not bucket.take()
    bucket.stamp -= 0.05                    # 50 ms later: 5 more tokens
    assert sum(bucket.take() for _ in range(10)) == 5


def test_options_are_checked() -> None:
    app = harpia()
    with pytest.raises(ConfigurationError, match="max_messages_per_second"):
        app.ws("/", {}, max_messages_per_second=0)
    with pytest.raises(ConfigurationError, match="max_messages_burst"):
        app.ws("/", {}, max_messages_burst=1.5)
    with pytest.raises(ConfigurationError, match="max_connections_per_ip"):
        harpia(max_connections_per_ip=0)


async def test_connections_per_ip() -> None:
    app = harpia(max_connections_per_ip=2)
    app.ws("/", {})
    async with app.serve() as server:
        first = await RawClient.open(server.port)
        second = await RawClient.open(server.port)
        third = await RawClient.connect(server.port)
        response = await third.handshake("/")
        assert response.status == 429 and response.headers["retry-after"] == "5"
        third.sock.close()
        # One leaves: room for one more.
        await first.send_close(1000)
        assert (await first.recv_frame()).opcode == CLOSE
        first.sock.close()
        for _ in range(200):
            if app.hub.per_address is not None and app.hub.per_address.counts.get("127.0.0.1") == 1:
                break
            await asyncio.sleep(0.01)
        fourth = await RawClient.open(server.port)
        assert app.stats()["handshake_failures_by_status"] == {429: 1}
        second.sock.close()
        fourth.sock.close()


async def test_connections_per_ip_counts_the_proxied_address() -> None:
    app = harpia(max_connections_per_ip=1)
    app.ws("/", {})
    async with app.serve(proxy_protocol=True) as server:
        clients = []
        for source in ("203.0.113.7", "203.0.113.8"):       # two clients, one balancer
            client = await RawClient.connect(server.port)
            await client.send(V1.replace(b"203.0.113.7", source.encode()) + upgrade_request("/"))
            assert (await client.read_response()).status == 101
            clients.append(client)
        again = await RawClient.connect(server.port)
        await again.send(V1 + upgrade_request("/"))
        assert (await again.read_response()).status == 429
        for client in (*clients, again):
            client.sock.close()


@pytest.mark.parametrize("handler_kind", ["sync", "async"])
async def test_message_rate_closes_with_1008(handler_kind: str) -> None:
    app = harpia()
    received: list[str] = []

    def on_message(ws: Any, message: str) -> None:
        received.append(message)

    async def on_message_async(ws: Any, message: str) -> None:
        received.append(message)

    closes: list[int] = []
    app.ws("/", {"message": on_message if handler_kind == "sync" else on_message_async,
                 "close": lambda ws, code, reason: closes.append(code)},
           max_messages_per_second=5, max_messages_burst=10)
    async with app.serve() as server:
        client = await RawClient.open(server.port)
        for i in range(30):
            await client.send_frame(TEXT, str(i))
        frame = await client.recv_frame()
        assert frame.opcode == CLOSE and frame.close_code == 1008
        assert frame.close_reason == "message rate limit exceeded"
        client.sock.close()
    # The burst went through (the bucket may refill a little on a slow machine), no more.
    assert 10 <= len(received) <= 12 and received[:10] == [str(i) for i in range(10)]
    assert closes == [1008]


async def test_pings_count_and_a_polite_client_is_never_closed() -> None:
    app = harpia()
    app.ws("/strict", {}, max_messages_per_second=50, max_messages_burst=3)
    app.ws("/", {"message": lambda ws, m: ws.send(m)}, max_messages_per_second=50,
           max_messages_burst=20)
    async with app.serve() as server:
        flooder = await RawClient.open(server.port, "/strict")
        for _ in range(10):
            await flooder.send_frame(PING, b"p")
        pongs = 0
        while (frame := await flooder.recv_frame()).opcode != CLOSE:
            pongs += 1
        # The engine answers a ping before the count sees it: 3 within the burst, the 4th
        # answered and then closed on.
        assert frame.close_code == 1008 and pongs == 4
        flooder.sock.close()

        polite = await RawClient.open(server.port)
        start = time.monotonic()
        for i in range(40):                   # 40 messages at ~20/s: well under 50/s
            await polite.send_text(str(i))
            assert (await polite.recv_frame()).payload == str(i).encode()
            await asyncio.sleep(max(0.0, start + (i + 1) * 0.05 - time.monotonic()))
        polite.sock.close()
