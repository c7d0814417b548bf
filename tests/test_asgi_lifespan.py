"""The ASGI lifespan protocol around serving: startup, shutdown, state, failures."""
from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from asgi_apps import HttpClient

import harpia
from harpia.errors import LifespanError


def lifespan_app(events: list[str], fail: str | None = None) -> Any:
    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            message = await receive()
            assert message["type"] == "lifespan.startup"
            if fail == "message":
                await send({"type": "lifespan.startup.failed", "message": "no database"})
                return
            if fail == "raise":
                raise RuntimeError("cannot connect")
            scope["state"]["db"] = "connected"
            events.append("startup")
            await send({"type": "lifespan.startup.complete"})
            message = await receive()
            assert message["type"] == "lifespan.shutdown"
            events.append("shutdown")
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] == "http":
            await receive()
            body = json.dumps({"db": scope["state"].get("db")}).encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})

    return asgi


async def test_state_reaches_requests_and_shutdown_runs_at_stop() -> None:
    events: list[str] = []
    app = harpia.harpia()
    app.mount("/", lifespan_app(events))
    async with app.serve(port=0) as server:
        assert events == ["startup"]
        client = await HttpClient.open(server.port)
        status, _, body = await client.request("GET", "/")
        assert (status, json.loads(body)) == (200, {"db": "connected"})
        await client.close()
    assert events == ["startup", "shutdown"]


async def test_two_listeners_share_one_lifespan() -> None:
    events: list[str] = []
    app = harpia.harpia()
    app.mount("/", lifespan_app(events))
    async with app.serve(port=0), app.serve(port=0):
        assert events == ["startup"]
    assert events == ["startup", "shutdown"]


@pytest.mark.parametrize("fail", ["message", "raise"])
async def test_startup_failure_stops_the_server(fail: str) -> None:
    app = harpia.harpia()
    app.mount("/", lifespan_app([], fail))
    with pytest.raises(LifespanError, match="no database" if fail == "message" else "cannot connect"):
        async with app.serve(port=0):
            raise AssertionError("served despite a failed startup")


async def test_app_without_lifespan_is_served() -> None:
    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(f"unsupported scope {scope['type']}")
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body"})

    app = harpia.harpia()
    app.mount("/", asgi)
    async with app.serve(port=0) as server:
        client = await HttpClient.open(server.port)
        status, _, body = await client.request("GET", "/")
        assert (status, body) == (204, b"")
        await client.close()


def test_listen_reports_a_failed_startup() -> None:
    app = harpia.harpia()
    app.mount("/", lifespan_app([], "message"))
    with pytest.raises(LifespanError, match="no database"):
        app.listen(host="127.0.0.1", port=0)


async def test_lifespan_with_the_test_client() -> None:
    events: list[str] = []
    app = harpia.harpia()
    app.mount("/", lifespan_app(events))
    listener = await harpia.Listener(app).start_in_process()
    assert events == ["startup"]
    await listener.stop()
    assert events == ["startup", "shutdown"]
    await asyncio.sleep(0)
