"""The API contract: the example app every harpia release must run, verbatim, at module level.

The only change is the last statement: instead of ``app.listen(port=3000, tls=...)``, which
blocks, the tests serve this same module-level ``app`` with ``app.serve(port=0)`` and
exercise each route with a client; ``app.listen`` itself (keyword and mapping forms, with
TLS) runs in a subprocess that imports this module and is stopped with SIGTERM.
"""

# ---------------------------------------------------------------- the snippet, as written
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit
from harpia import harpia, ServerWebSocket

@dataclass
class ConnectionData:
    userId: str = ""
    username: str = ""
    sessionId: str = ""

@dataclass
class GameData:
    playerId: str = ""
    gameId: str = ""
    score: int = 0

class Token:                               # what the /secure upgrade hook returns
    def __init__(self, token: str | None) -> None:
        self.token = token

def is_valid_token(token: str | None) -> bool:
    return token == "s3cret"

app = harpia()

def on_open(ws: ServerWebSocket[ConnectionData]) -> None:
    ws.data.userId = "123"                 # typed per-connection data
    ws.send("Welcome to the chat!")

def on_message(ws: ServerWebSocket[ConnectionData], message: str | bytes) -> None:
    print(f"Message from {ws.data.username}:", message)

def on_close(ws: ServerWebSocket[ConnectionData], code: int, reason: str) -> None:
    print(f"{ws.data.username} disconnected")

def on_error(ws: ServerWebSocket[ConnectionData], error: BaseException) -> None:
    print("WebSocket error:", error)

app.ws("/chat", {"open": on_open, "message": on_message,
                 "close": on_close, "error": on_error}, data=ConnectionData)

# handlers may also be an object with methods (a class instance); both forms are equivalent
class Game:
    def open(self, ws: ServerWebSocket[GameData]) -> None:
        ws.data.playerId = uuid.uuid4().hex
app.ws("/game", Game(), data=GameData)

# broadcast through the live connection set
def broadcast(ws, message):
    for client in app.websocket.connections:
        if client.readyState == 1:          # OPEN; harpia.OPEN and ws.ready_state also exist
            client.send(message)
app.ws("/notifications", {"message": broadcast})

# dynamic routes: Bun's way, and the Pythonic way
def room_open(ws):
    room_id = urlsplit(ws.data.url).path.split("/")[2]
    ws.data.roomId = room_id
    assert ws.params["roomId"] == room_id
app.ws("/room/:roomId", {"open": room_open})

# connection validation (data from the upgrade hook), error handling, backpressure
def secure_open(ws: ServerWebSocket[Token]) -> None:
    if not is_valid_token(ws.data.token):
        ws.close(1008, "Invalid token")
app.ws("/secure", {"open": secure_open},
       upgrade=lambda request: Token(request.query.get("token")))

def reliable_message(ws, message):
    try:
        raise ValueError("cannot process")  # process message
    except Exception:
        ws.send("Error processing message")
        ws.close(1011, "Processing error")
app.ws("/reliable", {"message": reliable_message})

app.ws("/high-volume", {"drain": lambda ws: print("Client receive buffer full")})

# app.listen(port=3000, tls={"key": "/path/to/key.pem", "cert": "/path/to/cert.pem"})
# app.listen({"port": 3000, "tls": {...}}) is accepted too, as in Bun
# ---------------------------------------------------------------- end of the snippet

import asyncio
import json
import os
import signal
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trustme
from wsclient import RawClient, closed_code, ws_connect

import harpia as harpia_module

TESTS = Path(__file__).resolve().parent


def server_side(client: Any) -> Any:
    """The ServerWebSocket behind a websockets client (matched by the client's port)."""
    port = client.local_address[1]
    found = [ws for ws in app.websocket.connections if ws.remote_address[1] == port]
    assert len(found) == 1, found
    return found[0]


async def settled(client: Any) -> None:
    """Every message this client sent so far has been handled (the pong comes after)."""
    await asyncio.wait_for(await client.ping(), 5)


async def test_chat_welcome_typed_data_and_prints(capsys: pytest.CaptureFixture[str]) -> None:
    async with app.serve(port=0) as server:
        async with ws_connect(server.port, "/chat") as client:
            assert await client.recv() == "Welcome to the chat!"
            ws = server_side(client)
            assert isinstance(ws.data, ConnectionData) and ws.data.userId == "123"
            ws.data.username = "ann"
            await client.send("hello")
            await client.send(b"\x00bytes")
            await settled(client)
            assert ws.readyState == harpia_module.OPEN
        await asyncio.sleep(0.05)
    out = capsys.readouterr().out
    assert "Message from ann: hello\n" in out
    assert "Message from ann: b'\\x00bytes'\n" in out
    assert "ann disconnected\n" in out


async def test_game_sets_a_player_id() -> None:
    async with app.serve(port=0) as server:
        async with ws_connect(server.port, "/game") as a, ws_connect(server.port, "/game") as b:
            await settled(a)
            await settled(b)
            ids = [server_side(c).data.playerId for c in (a, b)]
            for ws in map(server_side, (a, b)):
                assert isinstance(ws.data, GameData)
                assert (ws.data.gameId, ws.data.score) == ("", 0)
            assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
            assert ids[0] != ids[1]


async def test_notifications_broadcast_to_every_open_client() -> None:
    async with app.serve(port=0) as server:
        async with ws_connect(server.port, "/notifications") as a, \
                ws_connect(server.port, "/notifications") as b, \
                ws_connect(server.port, "/chat") as chat:
            assert await chat.recv() == "Welcome to the chat!"
            await a.send("news")
            await a.send(b"\x01\x02")
            for client in (a, b, chat):            # every connection of the app, sender too
                assert [await client.recv(), await client.recv()] == ["news", b"\x01\x02"]
            assert len(app.websocket.connections) == 3


async def test_room_route_reads_the_room_from_the_url(caplog: pytest.LogCaptureFixture) -> None:
    async with app.serve(port=0) as server:
        async with ws_connect(server.port, "/room/lobby?x=1") as lobby, \
                ws_connect(server.port, "/room/42") as other:
            await settled(lobby)
            await settled(other)
            ws = server_side(lobby)
            assert ws.data.url == f"ws://127.0.0.1:{server.port}/room/lobby?x=1"
            assert (ws.data.roomId, ws.params) == ("lobby", {"roomId": "lobby"})
            assert server_side(other).data.roomId == "42"
    # The assert in room_open held: no handler error was logged.
    assert not [r for r in caplog.records if r.name == "harpia" and r.levelname == "ERROR"]


async def test_secure_closes_1008_without_a_valid_token() -> None:
    async with app.serve(port=0) as server:
        for path in ("/secure", "/secure?token=wrong"):
            async with ws_connect(server.port, path) as client:
                assert await closed_code(client) == (1008, "Invalid token")
        async with ws_connect(server.port, "/secure?token=s3cret") as client:
            await asyncio.sleep(0.1)
            await settled(client)                  # still open
            ws = server_side(client)
            assert isinstance(ws.data, Token) and ws.data.token == "s3cret"
            await client.send("anything")          # no message handler: ignored
            await settled(client)


async def test_reliable_reports_then_closes_1011() -> None:
    async with app.serve(port=0) as server:
        async with ws_connect(server.port, "/reliable") as client:
            await client.send("work")
            assert await client.recv() == "Error processing message"
            assert await closed_code(client) == (1011, "Processing error")


async def test_high_volume_drain_runs_when_a_slow_client_catches_up(
        capsys: pytest.CaptureFixture[str]) -> None:
    async with app.serve(port=0) as server:
        client = await RawClient.open(server.port, "/high-volume", rcvbuf=4096)
        try:
            found = [ws for ws in app.websocket.connections
                     if ws.remote_address[1] == client.local_port]
            ws = found[0]
            sent = 0
            while (result := ws.send(b"v" * 16384)) > 0:   # until the 1 MiB limit says -1
                sent += 1
                if sent % 4 == 0:
                    await asyncio.sleep(0)
            assert result == -1
            assert "Client receive buffer full" not in capsys.readouterr().out
            for _ in range(sent + 1):
                frame = await client.recv_frame()
                assert len(frame.payload) == 16384
            for _ in range(100):
                if "Client receive buffer full" in capsys.readouterr().out:
                    break
                await asyncio.sleep(0.01)
            else:
                pytest.fail("drain did not run")
        finally:
            client.close()


# --------------------------------------------------------------------------- app.listen

LISTEN = """
import json, sys
sys.path.insert(0, sys.argv[1])
import test_api_contract as snippets
options = json.loads(sys.argv[2])
if options.pop("mapping"):
    snippets.app.listen(options)
else:
    snippets.app.listen(**options)
"""


@pytest.mark.parametrize("mapping", [True, False], ids=["mapping", "keywords"])
def test_listen_serves_tls_until_sigterm_then_1001(mapping: bool, tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    key_path, cert_path = tmp_path / "key.pem", tmp_path / "cert.pem"
    cert.private_key_pem.write_to_path(str(key_path))
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    options = {"mapping": mapping, "host": "127.0.0.1", "port": 0,
               "tls": {"key": str(key_path), "cert": str(cert_path)}}
    env = dict(os.environ, PYTHONPATH=str(TESTS.parent))
    process = subprocess.Popen(
        [sys.executable, "-c", LISTEN, str(TESTS), json.dumps(options)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = process.stdout.readline()          # type: ignore[union-attr]
        assert line.startswith("harpia listening on wss://127.0.0.1:"), (
            line, process.stderr.read() if process.poll() is not None else "")  # type: ignore[union-attr]
        port = int(line.rsplit(":", 1)[1])
        context = ssl.create_default_context()
        ca.configure_trust(context)

        async def client() -> tuple[Any, ...]:
            async with ws_connect(port, "/chat", scheme="wss", ssl=context) as ws:
                welcome = await ws.recv()
                process.send_signal(signal.SIGTERM)
                return (welcome, *await closed_code(ws))

        assert asyncio.run(client()) == ("Welcome to the chat!", 1001, "server shutting down")
        assert process.wait(10) == 0
        out = process.stdout.read()               # type: ignore[union-attr]
        assert " disconnected" in out             # on_close ran during the shutdown
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()                    # type: ignore[union-attr]
        process.stderr.close()                    # type: ignore[union-attr]
