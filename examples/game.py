"""Typed per-connection data (as Bun's GameData example): each player gets an id and a score."""
from __future__ import annotations

import uuid
from dataclasses import dataclass

from harpia import ServerWebSocket, harpia


@dataclass
class GameData:
    playerId: str = ""  # noqa: N815 - Bun's field names
    gameId: str = ""  # noqa: N815
    score: int = 0


class Game:
    """Handlers may be an object with methods."""

    def open(self, ws: ServerWebSocket[GameData]) -> None:
        ws.data.playerId = uuid.uuid4().hex
        ws.data.gameId = ws.params.get("gameId", "lobby")
        ws.send(f"player {ws.data.playerId} joined game {ws.data.gameId}")

    def message(self, ws: ServerWebSocket[GameData], message: str | bytes) -> None:
        ws.data.score += 1
        ws.send(f"score {ws.data.score}")


app = harpia()
app.ws("/game/:gameId", Game(), data=GameData)

if __name__ == "__main__":
    app.listen(port=3000)
