"""Broadcast through the live connection set (as Bun's notifications example).

For many receivers prefer pub/sub (``ws.subscribe`` + ``app.publish``): it serializes the
frame once for everyone, where this loop builds it once per client.
"""
from __future__ import annotations

from harpia import OPEN, ServerWebSocket, harpia

app = harpia()


def broadcast(ws: ServerWebSocket[object], message: str | bytes) -> None:
    for client in app.websocket.connections:
        if client.readyState == OPEN:
            client.send(message)


app.ws("/notifications", {"message": broadcast})

if __name__ == "__main__":
    app.listen(port=3000)
