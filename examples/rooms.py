"""Rooms with route parameters and pub/sub: /room/:roomId."""
from __future__ import annotations

from harpia import ServerWebSocket, harpia

app = harpia()


def on_open(ws: ServerWebSocket[object]) -> None:
    ws.subscribe(f"room:{ws.params['roomId']}")


def on_message(ws: ServerWebSocket[object], message: str | bytes) -> None:
    # To everyone else in the room (ws.publish skips the sender by default).
    ws.publish(f"room:{ws.params['roomId']}", message)


app.ws("/room/:roomId", {"open": on_open, "message": on_message})

if __name__ == "__main__":
    app.listen(port=3000)
