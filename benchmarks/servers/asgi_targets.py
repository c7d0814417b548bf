"""The ASGI apps the ASGI benchmarks serve, the same for every server.

  api    FastAPI: GET /json -> {"message": "Hello, World!"}; WebSocket /echo sends every
         message back (same type)
  hello  a plain ASGI app: "Hello, World!" as text/plain
"""
from __future__ import annotations

from typing import Any

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

api = FastAPI()


@api.get("/json")
async def json_endpoint() -> dict[str, str]:
    return {"message": "Hello, World!"}


@api.websocket("/echo")
async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is not None:
                await websocket.send_text(text)
            else:
                await websocket.send_bytes(message["bytes"])
    except WebSocketDisconnect:
        pass


_HELLO_HEAD = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")],
}
_HELLO_BODY = {"type": "http.response.body", "body": b"Hello, World!"}


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send(_HELLO_HEAD)
    await send(_HELLO_BODY)
