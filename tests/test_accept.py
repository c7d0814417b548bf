"""``harpia.Accept``: headers added to the 101 by the upgrade hook, validated."""
from __future__ import annotations

import logging
from typing import Any

import pytest
from wsclient import RawClient

from harpia import Accept, harpia


def test_validation() -> None:
    assert Accept("d", {"Set-Cookie": "a=1"}).headers == (("Set-Cookie", "a=1"),)
    assert Accept(None, [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]).headers[1] == ("Set-Cookie", "b=2")
    for name, value, message in [
        ("X-Id", "a\r\nInjected: yes", "CR, LF or NUL"),
        ("X-Id", "caf\u00e9\u20ac", "latin-1"),
        ("Bad Name", "x", "not an HTTP token"),
        ("Sec-WebSocket-Accept", "x", "set by the handshake"),
        ("X-Id", 5, "must be a str"),
    ]:
        with pytest.raises(ValueError, match=message):
            Accept(None, {name: value})


class Session:
    def __init__(self, user: str) -> None:
        self.user = user


async def test_headers_on_the_101_and_data_on_ws(caplog: pytest.LogCaptureFixture) -> None:
    app = harpia()

    def upgrade(request: Any) -> Accept[Session]:
        return Accept(Session("ana"), headers={"Set-Cookie": "sid=42; HttpOnly",
                                               "X-Request-Id": "r-1"})

    async def async_upgrade(request: Any) -> Accept[None]:
        return Accept(headers={"X-Async": "yes"})

    def bad_upgrade(request: Any) -> Accept[None]:
        return Accept(headers={"X-Evil": "a\r\nSet-Cookie: admin=1"})

    app.ws("/", {"open": lambda ws: ws.send(ws.data.user)}, upgrade=upgrade)
    app.ws("/async", {"open": lambda ws: ws.send(type(ws.data).__name__)}, upgrade=async_upgrade)
    app.ws("/bad", {}, upgrade=bad_upgrade)
    async with app.serve() as server:
        client = await RawClient.connect(server.port)
        response = await client.handshake("/")
        assert response.status == 101
        assert response.headers["set-cookie"] == "sid=42; HttpOnly"
        assert response.headers["x-request-id"] == "r-1"
        assert (await client.recv_frame()).payload == b"ana"
        client.sock.close()

        client = await RawClient.connect(server.port)
        response = await client.handshake("/async")
        assert response.status == 101 and response.headers["x-async"] == "yes"
        assert (await client.recv_frame()).payload == b"AttributeBag"   # data=None: the default
        client.sock.close()

        client = await RawClient.connect(server.port)
        with caplog.at_level(logging.ERROR, logger="harpia"):
            response = await client.handshake("/bad")
        assert response.status == 500
        assert "set-cookie" not in response.headers
        assert any("CR, LF or NUL" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)
        client.sock.close()
