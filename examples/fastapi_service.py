"""FastAPI and harpia on one port: REST, an ASGI WebSocket and a native route share topics.

Run: python examples/fastapi_service.py [--port 3000]
  or: python -m harpia examples.fastapi_service:app --port 3000

    curl localhost:3000/messages
    curl -X POST localhost:3000/messages -H 'content-type: application/json' -d '{"text": "hi"}'
    websocat ws://localhost:3000/chat          # native harpia route (C on the hot path)
    websocat ws://localhost:3000/feed          # FastAPI endpoint, same "chat" topic
"""
from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from pydantic import BaseModel

from harpia import ServerWebSocket, harpia
from harpia.asgi import connection

app = harpia()


class Message(BaseModel):
    text: str


@asynccontextmanager
async def lifespan(api: FastAPI) -> AsyncIterator[dict[str, Any]]:
    # Runs once per serving process (each worker), before the first request.
    yield {"history": []}


api = FastAPI(lifespan=lifespan)


@api.get("/messages")
async def list_messages(request: Request) -> list[str]:
    history: list[str] = request.state.history
    return history[-50:]


@api.post("/messages", status_code=201)
async def post_message(message: Message, request: Request) -> dict[str, int]:
    request.state.history.append(message.text)
    # A REST call publishes to the topic the WebSockets hear, native and ASGI alike.
    return {"delivered": app.publish("chat", message.text)}


@api.websocket("/feed")
async def feed(websocket: WebSocket) -> None:
    await websocket.accept()
    ws = connection(websocket.scope)     # the harpia connection behind this endpoint
    ws.subscribe("chat")                 # published messages go straight to the client
    try:
        while True:
            text = await websocket.receive_text()
            ws.publish("chat", text)     # to every other subscriber
    except WebSocketDisconnect:
        pass


def on_open(ws: ServerWebSocket[Any]) -> None:
    ws.subscribe("chat")


def on_message(ws: ServerWebSocket[Any], message: str | bytes) -> None:
    ws.publish("chat", message)


# The native route keeps its path: the engine calls these handlers, no ASGI on the way.
app.ws("/chat", {"open": on_open, "message": on_message})
app.get("/health", lambda request: {"status": "ok"})
app.mount("/", api)                      # everything else goes to FastAPI


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    app.listen(port=args.port, workers=args.workers)
