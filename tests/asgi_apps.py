"""The FastAPI app the ASGI tests serve, and a small HTTP/1.1 client over a real socket.

The client parses responses with h11 (an independent HTTP implementation), so a framing
mistake on our side fails the tests instead of being agreed with.
"""
from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import h11
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel

import harpia
from harpia.asgi import connection


class Item(BaseModel):
    name: str
    price: float


def make_api(events: list[str] | None = None) -> FastAPI:
    """REST, a streamed response, uploads, lifespan state and WebSocket endpoints."""
    log = events if events is not None else []

    @asynccontextmanager
    async def lifespan(api: FastAPI) -> AsyncIterator[dict[str, Any]]:
        log.append("startup")
        yield {"greeting": "hello from lifespan"}
        log.append("shutdown")

    api = FastAPI(lifespan=lifespan)

    @api.api_route("/items/{item_id}", methods=["GET", "HEAD"])
    async def read_item(item_id: int, q: str | None = None) -> dict[str, Any]:
        return {"item_id": item_id, "q": q}

    @api.post("/items")
    async def create_item(item: Item) -> dict[str, Any]:
        return {"name": item.name, "price": item.price, "created": True}

    @api.get("/state")
    async def state(request: Request) -> dict[str, Any]:
        return {"greeting": request.state.greeting, "root_path": request.scope["root_path"],
                "path": request.scope["path"]}

    @api.get("/stream")
    async def stream(n: int = 5, size: int = 10) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for i in range(n):
                yield bytes([0x61 + i % 26]) * size
        return StreamingResponse(chunks(), media_type="application/octet-stream")

    @api.post("/upload")
    async def upload(request: Request) -> dict[str, Any]:
        size = 0
        pieces = 0
        async for chunk in request.stream():
            size += len(chunk)
            pieces += 1
        return {"size": size}

    @api.post("/echo-body")
    async def echo_body(request: Request) -> PlainTextResponse:
        return PlainTextResponse((await request.body()).decode())

    @api.get("/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    @api.websocket("/ws/echo")
    async def ws_echo(websocket: WebSocket) -> None:
        protocols = websocket.scope["subprotocols"]
        await websocket.accept(subprotocol=protocols[0] if protocols else None,
                               headers=[(b"x-served-by", b"harpia")])
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    log.append(f"disconnect {message['code']}")
                    return
                if message.get("text") is not None:
                    text = message["text"]
                    if text.startswith("close "):
                        _, code, reason = text.split(" ", 2)
                        await websocket.close(int(code), reason)
                        return
                    await websocket.send_text(text)
                else:
                    await websocket.send_bytes(message["bytes"])
        except WebSocketDisconnect as exc:
            log.append(f"disconnect {exc.code}")

    @api.websocket("/ws/deny")
    async def ws_deny(websocket: WebSocket) -> None:
        from fastapi.responses import JSONResponse
        await websocket.send_denial_response(JSONResponse({"error": "no token"}, status_code=401))

    @api.websocket("/ws/refuse")
    async def ws_refuse(websocket: WebSocket) -> None:
        await websocket.close(code=1008)

    @api.websocket("/ws/room")
    async def ws_room(websocket: WebSocket) -> None:
        await websocket.accept()
        ws = connection(websocket.scope)
        ws.subscribe("room")
        await websocket.send_text("joined")
        try:
            while True:
                text = await websocket.receive_text()
                ws.publish("room", f"asgi says {text}")
        except WebSocketDisconnect:
            pass

    return api


def make_app(events: list[str] | None = None, path: str = "/", **options: Any) -> harpia.App:
    """A harpia app with a native route and ``make_api`` mounted at ``path``."""
    app = harpia.harpia()

    def native_message(ws: harpia.ServerWebSocket[Any], message: str | bytes) -> None:
        ws.publish("room", f"native says {message!s}")

    app.ws("/native", {"open": lambda ws: ws.subscribe("room"), "message": native_message},
           publish_to_self=False)
    app.get("/health", lambda request: {"status": "ok"})
    app.mount(path, make_api(events), **options)
    return app


def parse_responses(data: bytes, methods: list[str]) -> list[tuple[int, dict[str, str], bytes]]:
    """Split raw bytes holding one response per request method (pipelining), with h11."""
    responses = []
    for method in methods:
        conn = h11.Connection(h11.CLIENT)
        conn.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
        conn.send(h11.EndOfMessage())
        conn.receive_data(data)
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(b"")     # no more bytes: h11 ends a close-delimited body
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
                headers = {k.decode().lower(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise AssertionError(f"incomplete response to {method} in {data!r}")
        responses.append((status, headers, bytes(body)))
        data, _ = conn.trailing_data
    assert not data, f"bytes after the last response: {data!r}"
    return responses


class HttpClient:
    """A keep-alive HTTP/1.1 client on one connection; responses parsed by h11."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.CLIENT)

    @classmethod
    async def open(cls, port: int, ssl_context: ssl.SSLContext | None = None) -> HttpClient:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ssl_context,
            server_hostname="localhost" if ssl_context else None)
        return cls(reader, writer)

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    async def response(self) -> tuple[int, dict[str, str], bytes]:
        """Read the response to the request just sent: status, headers, body."""
        conn = self.h11
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await asyncio.wait_for(self.reader.read(65536), 10))
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
                headers = {k.decode().lower(): v.decode() for k, v in event.headers}
                body = bytearray()
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return status, headers, bytes(body)
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("closed before a complete response")

    async def request(self, method: str, target: str, body: bytes = b"",
                      headers: list[tuple[str, str]] | None = None) -> tuple[int, dict[str, str], bytes]:
        hdrs = [("Host", "localhost")] + (headers or [])
        if body and not any(n.lower() in ("content-length", "transfer-encoding") for n, _ in hdrs):
            hdrs.append(("Content-Length", str(len(body))))
        conn = self.h11
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        self.writer.write(conn.send(h11.Request(method=method, target=target, headers=hdrs)) or b"")
        if body:
            self.writer.write(conn.send(h11.Data(data=body)) or b"")
        self.writer.write(conn.send(h11.EndOfMessage()) or b"")
        return await self.response()

    async def read_some(self) -> bytes:
        """What arrives next (b"" once the server has closed)."""
        return await asyncio.wait_for(self.reader.read(65536), 10)

    async def read_until_closed(self) -> bytes:
        data = bytearray()
        while True:
            chunk = await asyncio.wait_for(self.reader.read(65536), 10)
            if not chunk:
                return bytes(data)
            data += chunk

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass
