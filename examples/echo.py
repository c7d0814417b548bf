"""The smallest harpia server: echo every message back.  python examples/echo.py"""
from __future__ import annotations

from harpia import ServerWebSocket, harpia

app = harpia()


def on_message(ws: ServerWebSocket[object], message: str | bytes) -> None:
    ws.send(message)


app.ws("/", {"message": on_message})

if __name__ == "__main__":
    app.listen(port=3000)
