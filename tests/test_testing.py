"""harpia.testing.TestClient: in-process connections through the app's real stack."""
from __future__ import annotations

import asyncio

import pytest

from harpia import ConnectionClosed, HandshakeError, Reject, Request, ServerWebSocket, harpia
from harpia.testing import TestClient


def make_app() -> tuple[object, list[tuple[int, str]], list[str]]:
    app = harpia()
    closes: list[tuple[int, str]] = []
    events: list[str] = []

    def upgrade(request: Request) -> dict[str, str]:
        if request.headers.get("authorization") != "Bearer t":
            raise Reject(401, "no token")
        return {"room": request.params["room"]}

    def on_message(ws: ServerWebSocket[dict[str, str]], message: str | bytes) -> None:
        if message == "flood":
            results = [ws.send("x" * 1000) for _ in range(100)]
            events.append(f"flood {results.count(-1)} {results.count(0)}")
        else:
            ws.send(f"{ws.data['room']}:{message!s}")

    app.ws("/room/:room", {
        "message": on_message,
        "close": lambda ws, code, reason: closes.append((code, reason)),
        "drain": lambda ws: events.append("drain"),
    }, upgrade=upgrade, backpressure_limit=16 * 1024)
    return app, closes, events


async def test_connect_send_receive_close() -> None:
    app, closes, _ = make_app()
    async with TestClient(app) as client:  # type: ignore[arg-type]
        ws = await client.connect("/room/7", headers={"Authorization": "Bearer t"})
        await ws.send("hello")
        assert await ws.receive() == "7:hello"
        await ws.close(4000, "bye")
        assert ws.close_code == 4000
        with pytest.raises(ConnectionClosed):
            await ws.receive()
    await asyncio.sleep(0)
    assert closes == [(4000, "bye")]


async def test_rejected_handshake_reports_the_status() -> None:
    app, _, _ = make_app()
    async with TestClient(app) as client:  # type: ignore[arg-type]
        with pytest.raises(HandshakeError) as info:
            await client.connect("/room/7")
        assert info.value.status == 401
        with pytest.raises(HandshakeError) as missing:
            await client.connect("/nowhere")
        assert missing.value.status == 404


async def test_slow_reader_makes_backpressure_and_drain_observable() -> None:
    app, _, events = make_app()
    async with TestClient(app) as client:  # type: ignore[arg-type]
        ws = await client.connect("/room/1", headers={"Authorization": "Bearer t"}, slow=True)
        await ws.send("flood")
        await asyncio.sleep(0.05)
        assert len(events) == 1 and events[0].startswith("flood 1 ")   # one -1, then drops
        dropped = int(events[0].split()[2])
        assert dropped > 0
        ws.resume_reading()
        received = [await ws.receive() for _ in range(100 - dropped)]
        assert all(m == "x" * 1000 for m in received)
        for _ in range(50):
            if "drain" in events:
                break
            await asyncio.sleep(0.01)
        assert events[1:] == ["drain"]


async def test_server_shutdown_closes_test_connections_with_1001() -> None:
    app, closes, _ = make_app()
    client = TestClient(app)  # type: ignore[arg-type]
    await client.__aenter__()
    ws = await client.connect("/room/2", headers={"Authorization": "Bearer t"})
    await client.__aexit__(None, None, None)
    await ws.wait_closed()
    assert ws.close_code == 1001


async def test_receive_timeout_says_what_it_waited_for() -> None:
    app, _, _ = make_app()
    async with TestClient(app) as client:  # type: ignore[arg-type]
        ws = await client.connect("/room/7", headers={"Authorization": "Bearer t"})
        with pytest.raises(TimeoutError) as info:
            await ws.receive(timeout=0.05)
        assert str(info.value) == (
            "TestWebSocket.receive: no message from the server within 0.05 s (the connection "
            "is still open; pass timeout= to wait longer)")
        await ws.send("still works")
        assert await ws.receive() == "7:still works"
