"""A chat room: open http://localhost:3000 in two browser tabs and talk.

Run: python examples/chat.py [--port 3000] [--deflate]
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from harpia import App, Request, ServerWebSocket, harpia

PAGE = (Path(__file__).parent / "chat.html").read_text(encoding="utf-8")


@dataclass
class ChatUser:
    username: str = "anonymous"


def make_app(*, per_message_deflate: bool = False) -> App:
    """The chat app; ``per_message_deflate`` compresses messages for browsers that offer it
    (they all do)."""
    app = harpia()

    def upgrade(request: Request) -> ChatUser:
        name = request.query.get("name", "").strip()[:32]
        return ChatUser(username=name or "anonymous")

    def on_open(ws: ServerWebSocket[ChatUser]) -> None:
        ws.subscribe("chat")
        ws.send(json.dumps({"from": "server", "text": f"Welcome to the chat, {ws.data.username}!"}))
        ws.publish("chat", json.dumps({"from": "server", "text": f"{ws.data.username} joined"}))

    def on_message(ws: ServerWebSocket[ChatUser], message: str | bytes) -> None:
        text = message if isinstance(message, str) else message.decode("utf-8", "replace")
        # Everyone, the sender included, sees the message in the same order.
        app.publish("chat", json.dumps({"from": ws.data.username, "text": text[:2000]}))

    def on_close(ws: ServerWebSocket[ChatUser], code: int, reason: str) -> None:
        app.publish("chat", json.dumps({"from": "server", "text": f"{ws.data.username} left"}))

    app.ws("/chat", {"open": on_open, "message": on_message, "close": on_close},
           upgrade=upgrade, max_payload_length=64 * 1024, per_message_deflate=per_message_deflate)
    app.get("/", lambda request: PAGE, content_type="text/html; charset=utf-8")
    app.get("/health", lambda request: {"status": "ok", "connections": len(app.websocket.connections)})
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--deflate", action="store_true", help="enable permessage-deflate")
    args = parser.parse_args()
    app = make_app(per_message_deflate=args.deflate)
    app.listen(host=args.host, port=args.port)


if __name__ == "__main__":
    main()
